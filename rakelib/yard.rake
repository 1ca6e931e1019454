# frozen_string_literal: true

require "open3"

namespace :yard do
  desc "YARD: every public object documented, no warnings"
  task :check do
    root = File.expand_path("..", __dir__)
    # --no-save: yard writes no .yardoc/ database into the checkout; --db makes anything it
    # would read or write live under tmp/ (gitignored), never a stray .yardoc/ here.
    db = ["--no-save", "--db", File.join(root, "tmp", "yardoc")]
    # Debian's yard is not in the Gemfile: under `bundle exec rake` it runs outside the bundle.
    yard = lambda do |*args|
      run = -> { Open3.capture2e("yard", *args, chdir: root) }
      defined?(Bundler) ? Bundler.with_unbundled_env(&run) : run.call
    rescue Errno::ENOENT
      abort "rake yard:check: yard is not installed (Debian package yard)"
    end

    # --no-output parses and checks tags without writing HTML (so {links} are not resolved).
    out, status = yard.call("doc", *db, "--no-output", "--fail-on-warning", "lib")
    abort "rake yard:check: yard doc reported problems:\n#{out}" if !status.success? || out.match?(/\[(warn|error)\]/)

    out, status = yard.call("stats", *db, "--list-undoc", "lib")
    abort "rake yard:check: not every object is documented:\n#{out}" unless status.success? && out.include?("100.00% documented")

    puts out
    puts "yard:check: lib/ is fully documented, no warnings"
  end
end
