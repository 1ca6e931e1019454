# frozen_string_literal: true

# Integration and boundary specs run against the real PostgreSQL that bin/test starts.
module DatabaseSupport
  def self.url
    ENV.fetch("DATABASE_URL") do
      abort "DATABASE_URL must point at a PostgreSQL database for the specs (bin/test starts one)"
    end
  end
end

RSpec.configure do |config|
  config.before(:suite) { TaskerCore.migrate!(database_url: DatabaseSupport.url) }
end
