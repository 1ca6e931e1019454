# frozen_string_literal: true

require "fileutils"

root = File.expand_path("..", __dir__)

namespace :gem do
  desc "Build the source gem into pkg/ (its extension compiles at install time)"
  task :build do
    spec = Gem::Specification.load(File.join(root, "tasker_core.gemspec"))
    FileUtils.mkdir_p(File.join(root, "pkg"))
    output = File.join(root, "pkg", spec.file_name)
    sh "gem", "build", "--silent", File.join(root, "tasker_core.gemspec"), "--output", output,
       verbose: false
    puts "built #{output.delete_prefix("#{root}/")}"
  end
end
