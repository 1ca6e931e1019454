# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "tasker_core"

RSpec.configure do |config|
  config.disable_monkey_patching!
  config.expect_with(:rspec) { |expectations| expectations.syntax = :expect }
  config.mock_with(:rspec) { |mocks| mocks.syntax = :expect }

  # Random order, seed printed: rerun a failing order with `rspec --seed N`.
  config.order = :random
  Kernel.srand(config.seed)

  # Enables `rspec --only-failures` and `--next-failure`.
  config.example_status_persistence_file_path = "tmp/rspec_status"
end

Dir[File.join(__dir__, "support/**/*.rb")].sort.each { |f| require f }
