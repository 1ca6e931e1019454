# frozen_string_literal: true

require "rbconfig"

namespace :rbs do
  desc "Check sig/*.rbs with rbs validate"
  task :validate do
    root = File.expand_path("..", __dir__)
    # Debian's Ruby 3.1 ships the rbs gem (2.1) but puts no `rbs` on PATH: run its executable
    # through the current Ruby. -r loads the stdlib signatures sig/ refers to (::Logger,
    # Pathname) and monitor, which rbs 2.1's logger signatures need but do not load themselves.
    # `sh` raises, and rake exits non-zero, when rbs reports an error.
    rbs = ["-e", 'load Gem.bin_path("rbs", "rbs")', "--"]
    Dir.chdir(root) do
      sh RbConfig.ruby, *rbs, "-r", "monitor", "-r", "logger", "-r", "pathname", "-I", "sig", "validate", "--silent",
         verbose: false
    end
    puts "rbs validate: sig/ is valid"
  end
end
