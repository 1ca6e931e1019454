# frozen_string_literal: true

begin
  require "rspec/core/rake_task"

  desc "Run the RSpec suite (builds the native extension first)"
  RSpec::Core::RakeTask.new(:spec) { |t| t.verbose = false }
rescue LoadError
  desc "Run the RSpec suite (rspec is not installed: run bin/setup)"
  task(:spec) { abort "rake spec: rspec is not installed: run bin/setup (Debian package ruby-rspec)" }
end
task spec: :compile

namespace :cargo do
  desc "Run the Rust tests of the workspace (core's integration tests read DATABASE_URL)"
  task :test do
    sh "cargo", "test", "--quiet", "--locked", "--workspace", verbose: false
  end
end

desc "Run cargo test, then the RSpec suite"
task test: %w[cargo:test spec]
