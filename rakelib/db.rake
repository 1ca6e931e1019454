# frozen_string_literal: true

root = File.expand_path("..", __dir__)

namespace :db do
  desc "Apply the SQL migrations to DATABASE_URL (runs `exe/tasker_core migrate`)"
  task migrate: :compile do
    ruby "-I", File.join(root, "lib"), File.join(root, "exe/tasker_core"), "migrate", verbose: false
  end
end
