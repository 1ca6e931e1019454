# frozen_string_literal: true

# Plain SQL through the psql client, as a producer or operator without this gem would use it.
module PsqlHelpers
  def psql(sql, url: DatabaseSupport.url)
    out = IO.popen(["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                   err: %i[child out], &:read)
    raise "psql failed: #{out}" unless $?.success?

    out.strip
  end
end

RSpec.configure { |config| config.include PsqlHelpers }
