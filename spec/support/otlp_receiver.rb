# frozen_string_literal: true

require "json"
require "tmpdir"

# The test OTLP receiver (otlp-receiver/, a Rust binary on opentelemetry-proto's types):
# started on a free loopback port; every export it receives is a JSON line in its output file.
module OtlpReceiver
  ROOT = File.expand_path("../..", __dir__)

  def self.binary
    target = ENV.fetch("CARGO_TARGET_DIR", File.join(ROOT, "target"))
    system("cargo", "build", "--quiet", "--locked", "-p", "tasker-otlp-receiver", "--target-dir", target,
           chdir: ROOT, exception: true)
    File.join(target, "debug/otlp-receiver")
  end

  # Yields (endpoint, reader) where reader.call returns the exports received so far.
  def with_otlp_receiver
    Dir.mktmpdir("otlp") do |dir|
      out = File.join(dir, "exports.jsonl")
      stdin_r, stdin_w = IO.pipe
      stdout_r, stdout_w = IO.pipe
      pid = Process.spawn(OtlpReceiver.binary, out, in: stdin_r, out: stdout_w)
      stdin_r.close
      stdout_w.close
      begin
        line = Timeout.timeout(30) { stdout_r.gets }
        port = line.to_s[/127\.0\.0\.1:(\d+)/, 1] or raise "otlp-receiver did not start: #{line.inspect}"
        reader = -> { File.exist?(out) ? File.readlines(out).map { |l| JSON.parse(l) } : [] }
        yield "http://127.0.0.1:#{port}", reader
      ensure
        stdin_w.close # the receiver exits when its stdin closes
        Process.wait(pid)
      end
    end
  end
end

RSpec.configure { |config| config.include OtlpReceiver }
