# frozen_string_literal: true

# What a user's suite does to start each example from an empty workflow state (docs/testing.md):
# tasks (with their steps, edges and histories, by cascade) removed and every queue emptied.
# Templates stay registered. Use with `include_context "with a clean tasker database"`.
RSpec.shared_context "with a clean tasker database" do
  before do
    psql("TRUNCATE tasker.tasks CASCADE; SELECT pgmq.purge_queue(queue_name) FROM pgmq.list_queues()")
  end
end
