# frozen_string_literal: true

# Loads the compiled extension. A precompiled gem ships one library per Ruby minor version
# under lib/tasker_core/<major.minor>/; a source install builds lib/tasker_core/tasker_core_rb.so.
# TASKER_CORE_NATIVE names another build to load instead (the benchmarks' instrumented one).
override = ENV.fetch("TASKER_CORE_NATIVE", nil)
versioned = File.join(__dir__, RUBY_VERSION[/\A\d+\.\d+/], "tasker_core_rb.so")
if override && !override.empty?
  require File.expand_path(override)
elsif File.exist?(versioned)
  require versioned
elsif File.exist?(File.join(__dir__, "tasker_core_rb.so"))
  require_relative "tasker_core_rb"
else
  raise LoadError, "tasker_core's native extension is not built; run `rake compile` in a " \
                   "checkout, or reinstall the gem"
end
