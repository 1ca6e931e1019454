# frozen_string_literal: true

# Integration and boundary specs run against the real PostgreSQL that bin/test starts.
module DatabaseSupport
  def self.url
    ENV.fetch("DATABASE_URL") do
      abort "DATABASE_URL must point at a PostgreSQL database for the specs (bin/test starts one)"
    end
  end

  # Where the suite migrates: DATABASE_URL, or — when DATABASE_URL goes through a transaction
  # pooler (bin/test's pgbouncer stage), which migrations cannot use — TASKER_SPEC_MIGRATE_URL.
  def self.migrate_url = ENV.fetch("TASKER_SPEC_MIGRATE_URL") { url }
end

RSpec.configure do |config|
  config.before(:suite) { TaskerCore.migrate!(database_url: DatabaseSupport.migrate_url) }
end
