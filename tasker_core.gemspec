# frozen_string_literal: true

require_relative "lib/tasker_core/version"

Gem::Specification.new do |spec|
  spec.name = "tasker_core"
  spec.version = TaskerCore::VERSION
  spec.authors = ["The tasker_core authors"]
  spec.license = "MIT"
  spec.summary = "Workflow orchestration for Ruby: a Rust core on PostgreSQL + pgmq, Ruby step handlers."
  spec.description = <<~TEXT.tr("\n", " ").strip
    tasker_core runs workflows declared as DAGs of named steps whose handlers are Ruby classes.
    A Rust core, loaded as a native extension, persists every task in PostgreSQL, dispatches
    ready steps through pgmq queues in the same database, retries failures with backoff and
    finalizes tasks; many processes on many machines coordinate through the database alone.
  TEXT
  spec.required_ruby_version = ">= 3.1"

  spec.bindir = "exe"
  spec.executables = ["tasker_core"]
  spec.require_paths = ["lib"]
  # Source gem: the extension is compiled at install time from the Cargo workspace shipped
  # below (cargo, libclang and Ruby's headers are needed; not the rb_sys gem).
  spec.extensions = ["ext/tasker_core/extconf.rb"]

  # Listed with Dir.glob, not git, so a gem can be built from an unpacked tree. Cargo loads
  # every workspace member's manifest and needs Cargo.lock to match (`--locked`), so the whole
  # workspace ships (benches too); core's build embeds ../migrations.
  patterns = %w[
    lib/**/*.rb
    lib/tasker_core/web/views/*.erb
    lib/generators/**/*
    exe/*
    ext/tasker_core/{extconf.rb,Cargo.toml,build.rs}
    ext/tasker_core/src/**/*.rs
    core/{Cargo.toml,build.rs}
    core/src/**/*
    core/.sqlx/*.json
    .sqlx/*.json
    benches/{Cargo.toml,build.rs}
    benches/{src,benches}/**/*
    otlp-receiver/Cargo.toml
    otlp-receiver/src/**/*
    migrations/*.sql
    Cargo.toml
    Cargo.lock
    README.md
    LICENSE
    docs/**/*.md
    sig/**/*.rbs
    examples/**/*
  ]
  spec.files = Dir.glob(patterns, base: __dir__)
                  .select { |path| File.file?(File.join(__dir__, path)) }
                  .sort
end
