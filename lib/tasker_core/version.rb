# frozen_string_literal: true

module TaskerCore
  # The gem's version; the Rust crates carry the same number in the workspace Cargo.toml.
  VERSION = "0.1.0"
end
