# frozen_string_literal: true

# What a user's suite does to start each example from an empty workflow state (docs/testing.md):
# tasks (with their steps and edges, by cascade) and their histories removed and every queue
# emptied.
# Templates stay registered. Use with `include_context "with a clean tasker database"`.
RSpec.shared_context "with a clean tasker database" do
  before do
    psql("TRUNCATE tasker.tasks, tasker.task_transitions, tasker.workflow_step_transitions CASCADE; " \
         "SELECT pgmq.purge_queue(queue_name) FROM pgmq.list_queues()")
  end
end
