# frozen_string_literal: true

require "time"
require "yaml"
require_relative "../fixtures/faults/deterministic_handlers"

# Issue 5 fault test: 1,000 concurrent tasks where about 10 % of step attempts fail retryably
# and 1 % permanently, chosen by a fixed function of (task, step, attempt). The whole outcome
# is computed before the engine runs; every task must end `complete` or `error` as predicted,
# with every step's state and attempt count as predicted.
RSpec.describe "deterministic faults under load" do
  let(:task_count) { 1_000 }
  let(:template_file) { File.expand_path("../fixtures/faults/deterministic_faults.yaml", __dir__) }
  let(:template) { YAML.safe_load_file(template_file) }
  # Measured on a 2-core machine: the 1,000 tasks take 4 s to create and all finish about 17 s
  # after the gate opens (twice that with a cargo build running beside them). The deadline only
  # bounds a failing run.
  let(:deadline_seconds) { 90 }

  # [[name, [parent names], max_attempts]] in template order (parents come first).
  def template_steps
    template.fetch("steps").map do |s|
      [s.fetch("name"), s.fetch("dependencies", []), s.fetch("retry").fetch("max_attempts")]
    end
  end

  # What the engine must do with the task whose context key is `key`, following the documented
  # semantics (docs/operations.md): a step runs once all its parents are complete; a retryable
  # failure runs it again while attempts remain, then `error`; a permanent failure is `error` at
  # once; a step whose parent failed stays `pending` and never runs; other branches carry on.
  # The task is `complete` when every step is, otherwise `error`.
  def predict(key)
    steps = {}
    template_steps.each do |name, parents, max_attempts|
      unless parents.all? { |p| steps.fetch(p)[:state] == "complete" }
        steps[name] = { state: "pending", attempts: 0, outcomes: [] }
        next
      end
      outcomes = []
      (1..max_attempts).each do |attempt|
        outcomes << FaultSpecHandlers::Faults.outcome(key, name, attempt)
        break unless outcomes.last == :retryable
      end
      state = outcomes.last == :success ? "complete" : "error"
      steps[name] = { state: state, attempts: outcomes.size, outcomes: outcomes }
    end
    { status: steps.values.all? { |s| s[:state] == "complete" } ? "complete" : "error", steps: steps }
  end

  # The to_state of every transition a step goes through for the predicted attempts.
  def predicted_transitions(step)
    step[:outcomes].each_with_index.flat_map do |outcome, i|
      last = i == step[:outcomes].size - 1
      failed = last ? "error" : "waiting_for_retry"
      ["enqueued", "in_progress", outcome == :success ? "complete" : failed]
    end.unshift("pending")
  end

  def error_class_for(outcome)
    outcome == :permanent ? "TaskerCore::Errors::PermanentError" : "TaskerCore::Errors::RetryableError"
  end

  # The task finalizes once, as predicted, and only when none of its steps can change any more
  # (an error in one branch must not end the task while the other branch is still running).
  def task_history_mismatches(key, task, predicted)
    found = []
    states = task.transitions.map(&:to_state)
    found << "task #{key}: transitions #{states}" if states != ["pending", "in_progress", predicted[:status]]
    final = task.transitions.last
    counts = { "failed_steps" => predicted[:steps].values.count { |s| s[:state] == "error" },
               "unfinished_steps" => predicted[:steps].values.count { |s| s[:state] != "complete" } }
    found << "task #{key}: final transition #{final.to_h}, predicted #{counts}" if final.metadata != counts
    last_step_change = task.steps.flat_map(&:transitions).map { |t| Time.iso8601(t.created_at) }.max
    if Time.iso8601(final.created_at) < last_step_change
      found << "task #{key}: finalized at #{final.created_at}, before a step changed at #{last_step_change.iso8601(6)}"
    end
    found
  end

  # The most tasks that were running (created, not yet finalized) at the same moment.
  def max_in_flight(tasks)
    events = tasks.flat_map do |t|
      [[Time.iso8601(t.transitions.first.created_at), 1], [Time.iso8601(t.transitions.last.created_at), -1]]
    end
    running = 0
    events.sort.map { |_, change| running += change }.max
  end

  def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  it "ends every task and step exactly as the fault function predicts" do
    predictions = (0...task_count).to_h { |key| [key, predict(key)] }

    # The fault set is fixed, so check up front that it exercises what the test is about.
    attempts = predictions.values.flat_map { |p| p[:steps].values.flat_map { |s| s[:outcomes] } }
    steps = predictions.values.flat_map { |p| p[:steps].values }
    retryable_share = attempts.count(:retryable).fdiv(attempts.size)
    permanent_share = attempts.count(:permanent).fdiv(attempts.size)
    expect(retryable_share).to be_between(0.08, 0.12)
    expect(permanent_share).to be_between(0.005, 0.02)
    expect(steps.count { |s| s[:attempts] > 1 }).to be >= 50
    expect(steps.count { |s| s[:outcomes].last == :permanent }).to be >= 1
    expect(steps.count { |s| s[:outcomes].last == :retryable }).to be >= 1 # retries exhausted
    expect(steps.count { |s| s[:outcomes].first(2) == %i[retryable retryable] && s[:state] == "complete" }).to be >= 1
    expect(predictions.values.count { |p| p[:status] == "error" }).to be_between(10, task_count / 5)
    # A branch failing while its sibling still completes (the task must wait for the sibling).
    expect(predictions.values.count do |p|
      lr = p[:steps].values_at("left", "right").map { |s| s[:state] }
      lr.sort == %w[complete error]
    end).to be >= 1

    FaultSpecHandlers::CallLog.reset!
    uuids = {}
    finished = {}
    with_engine(namespaces: ["spec_faults_load"], template_paths: [template_file], concurrency: 8) do
      # Handlers wait at the gate while the tasks are created (with it open, the engine keeps up
      # with creation and only about 10 tasks are ever in flight at once).
      FaultSpecHandlers::StartGate.close!
      started = now
      tasks = begin
        (0...task_count).to_h do |key|
          [key, TaskerCore::Client.create_task(namespace: "spec_faults_load", name: "deterministic_faults",
                                               version: "1.0.0", context: { "key" => key })]
        end
      ensure
        FaultSpecHandlers::StartGate.open!
      end
      opened = now

      deadline = opened + deadline_seconds
      tasks.each do |key, task|
        TaskerCore::Client.wait_for(task.uuid, timeout: [deadline - now, 0.01].max)
      rescue TaskerCore::Errors::TimeoutError
        statuses = tasks.values.map { |t| TaskerCore::Client.find_task(t.uuid).status }.tally
        raise "tasks not finished #{deadline_seconds}s after the gate opened (at key #{key}): #{statuses}"
      end
      done = now
      tasks.each do |key, task|
        uuids[task.uuid] = key
        finished[key] = TaskerCore::Client.find_task(task.uuid)
      end
      warn format("deterministic faults: created %<n>d tasks in %<c>.1fs, all finished %<d>.1fs later",
                  n: task_count, c: opened - started, d: done - opened)
    end

    expect(max_in_flight(finished.values)).to eq(task_count)

    mismatches = []
    predictions.each do |key, predicted|
      task = finished.fetch(key)
      mismatches << "task #{key}: status #{task.status}, predicted #{predicted[:status]}" if task.status != predicted[:status]
      mismatches.concat(task_history_mismatches(key, task, predicted))
      predicted[:steps].each do |name, expected|
        step = task.step(name)
        got = { state: step.state, attempts: step.attempts }
        want = expected.slice(:state, :attempts)
        mismatches << "task #{key} step #{name}: #{got}, predicted #{want} (#{expected[:outcomes]})" if got != want
        transitions = step.transitions.map(&:to_state)
        want_transitions = predicted_transitions(expected)
        if transitions != want_transitions
          mismatches << "task #{key} step #{name}: transitions #{transitions}, predicted #{want_transitions}"
        end
        case step.state
        when "complete"
          parents = step.dependencies.to_h { |parent| [parent, predicted[:steps].fetch(parent)[:attempts]] }
          want_result = { "key" => key, "step" => name, "attempt" => expected[:attempts], "parents" => parents }
          mismatches << "task #{key} step #{name}: result #{step.result}, predicted #{want_result}" if step.result != want_result
        when "error"
          error_class = step.error && step.error["error_class"]
          if error_class != error_class_for(expected[:outcomes].last)
            mismatches << "task #{key} step #{name}: error #{step.error.inspect}"
          end
        end
      end
    end
    expect(mismatches).to be_empty, "#{mismatches.size} mismatches; the first 20:\n#{mismatches.first(20).join("\n")}"

    # Every handler call that was predicted happened exactly once, and no other (calls for tasks
    # of an earlier run left in the database are not this run's).
    predicted_calls = predictions.flat_map do |key, p|
      p[:steps].flat_map { |name, s| (1..s[:attempts]).map { |attempt| [key, name, attempt] } }
    end
    logged = FaultSpecHandlers::CallLog.calls.select { |uuid, *| uuids.key?(uuid) }
    expect(logged.reject { |uuid, key, *| uuids[uuid] == key }).to be_empty
    calls = logged.map { |_uuid, key, name, attempt| [key, name, attempt] }
    expect(calls.tally.select { |_, n| n > 1 }).to be_empty # ran twice
    expect(calls - predicted_calls).to be_empty # ran, not predicted
    expect(predicted_calls - calls).to be_empty # predicted, never ran
    expect(calls.size).to eq(predicted_calls.size)
  end
end
