# frozen_string_literal: true

# Runs the say_hello step of config/tasker/templates/hello.yaml.
class HelloHandler < TaskerCore::StepHandler::Base
  # Greets the "name" in the task's context (default "world") and logs it.
  # @return [Hash] the step's result: "greeting" => "Hello, NAME!"
  def call(task, _sequence, _step)
    name = task.context.fetch("name", "world")
    TaskerCore::Logger.info("greeting", name: name)
    { "greeting" => "Hello, #{name}!" }
  end
end
