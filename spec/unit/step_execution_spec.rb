# frozen_string_literal: true

require "logger"
require "stringio"

# What StepExecution records for anything a handler raises or returns, without an engine.
RSpec.describe TaskerCore::StepExecution do
  def clean?(text)
    text.is_a?(String) && text.encoding == Encoding::UTF_8 && text.valid_encoding? && !text.include?("\0")
  end

  def raised(klass = RuntimeError, message = "m")
    raise klass, message
  rescue Exception => e # rubocop:disable Lint/RescueException
    e
  end

  # Every value of a failure Hash is what the engine's contract allows.
  def expect_contract(failure)
    expect(failure.keys).to contain_exactly("fault", "kind", "error_class", "message", "backtrace", "retry_after",
                                            "error_code", "metadata")
    expect(failure["metadata"]).to be_nil.or be_a(Hash)
    expect(failure["fault"]).to be(true).or be(false)
    expect(%w[retryable permanent]).to include(failure["kind"])
    expect([failure["error_class"], failure["message"], *failure["backtrace"]]).to all(satisfy { |s| clean?(s) })
    expect(failure["backtrace"]).to be_an(Array)
    expect(failure["retry_after"]).to be_nil.or be_a(Float)
    expect(failure["error_code"]).to be_nil.or(satisfy { |s| clean?(s) })
  end

  describe ".sanitize" do
    it "replaces invalid bytes and NUL, transcodes other encodings, keeps valid text" do
      expect(described_class.sanitize("bad \xff", 100)).to eq("bad \uFFFD")
      expect(described_class.sanitize("bad \xff\xfe".b, 100)).to eq("bad \uFFFD\uFFFD")
      expect(described_class.sanitize("a\0b", 100)).to eq("a\uFFFDb")
      expect(described_class.sanitize("caf\u00e9".encode("ISO-8859-1"), 100)).to eq("caf\u00e9")
      expect(described_class.sanitize("\u00e9t\u00e9 \u{1F600}", 100)).to eq("\u00e9t\u00e9 \u{1F600}")
      expect(described_class.sanitize("x".encode("UTF-16LE"), 100)).to eq("x")
      expect(described_class.sanitize("frozen", 100)).to(satisfy { |s| clean?(s) })
    end

    it "bounds the size at a character boundary and notes the full size" do
      out = described_class.sanitize("\u00e9" * 20_000, 16 * 1024)
      expect(out.bytesize).to be <= 16 * 1024
      expect(out).to end_with(" [truncated: 40000 bytes]")
      expect(out).to(satisfy { |s| clean?(s) })
      expect(described_class.sanitize("x" * 16 * 1024, 16 * 1024)).to eq("x" * 16 * 1024)
    end

    it "calls no method of a String subclass" do
      sneaky = Class.new(String) do
        def encoding = raise("no")
        def bytesize = raise("no")
      end
      expect(described_class.sanitize(sneaky.new("ok \xff"), 100)).to eq("ok \uFFFD")
    end
  end

  describe ".retry_after_seconds" do
    it "keeps finite non-negative Numerics as Floats, clamps huge ones, drops garbage" do
      [
        [5, 5.0], [2.5, 2.5], [Rational(1, 2), 0.5], [0, 0.0], [-0.0, 0.0], [3600, 3600.0],
        [1e300, 3600.0], [Float::INFINITY, 3600.0], [10**400, 3600.0], [7200, 3600.0],
        [nil, nil], ["5", nil], [Object.new, nil], [Float::NAN, nil], [-1, nil], [-Float::INFINITY, nil],
        [Complex(1, 1), nil], [:soon, nil], [BasicObject.new, nil]
      ].each do |value, seconds|
        got = described_class.retry_after_seconds(value)
        expect([got, got.class]).to eq([seconds, seconds.class])
        expect(got.to_s).not_to eq("-0.0")
      end
    end
  end

  describe ".failure" do
    it "records a plain exception unchanged" do
      e = raised(ArgumentError, "kaboom")
      failure = described_class.failure(e, "retryable", fault: true)
      expect(failure).to include("fault" => true, "kind" => "retryable", "error_class" => "ArgumentError",
                                 "message" => "kaboom", "retry_after" => nil, "error_code" => nil)
      expect(failure["backtrace"].first).to match(/step_execution_spec\.rb:\d+/)
      expect(failure["metadata"]).to be_nil
      expect_contract(failure)
    end

    it "records a step error's metadata, and an error result's" do
      e = raised(TaskerCore::PermanentError, "declined")
      e.metadata["http_status"] = 402
      expect(described_class.failure(e, "permanent")["metadata"]).to eq("http_status" => 402)
      result = TaskerCore::Types::StepHandlerCallResult.error(message: "m", metadata: { "url" => "u" })
      expect(described_class.error_result_failure(result)["metadata"]).to eq("url" => "u")
    end

    it "records the real class of an exception whose class name, message and backtrace raise" do
      klass = Class.new(StandardError) do
        def self.name = raise("no name")
        def message = raise(NoMethodError, "no message")
        def backtrace = raise(TypeError, "no backtrace")
      end
      stub_const("Unprintable", klass)
      failure = described_class.failure(klass.new, "retryable", error_code: BasicObject.new)
      expect(failure).to include("error_class" => "Unprintable",
                                 "message" => "(message unavailable: Unprintable#message raised NoMethodError)",
                                 "backtrace" => ["(backtrace unavailable: #backtrace raised TypeError)"],
                                 "error_code" => nil)
      expect_contract(failure)
    end

    it "names an anonymous exception class after its nearest named superclass" do
      e = Class.new(Class.new(KeyError)).new("anon")
      expect(described_class.failure(e, "retryable")["error_class"]).to eq("anonymous subclass of KeyError")
    end

    it "makes any backtrace a bounded Array of clean Strings" do
      [
        [42, ["42"]], ["one line", ["one line"]], [nil, []],
        [[nil, 1, :sym, "\xff", "a\0", BasicObject.new],
         ["", "1", "sym", "\uFFFD", "a\uFFFD", "(unprintable backtrace entry)"]],
        [Array.new(500) { |i| "l#{i}" }, Array.new(50) { |i| "l#{i}" }]
      ].each do |raw, lines|
        e = RuntimeError.new("x")
        e.define_singleton_method(:backtrace) { raw }
        expect(described_class.failure(e, "retryable")["backtrace"]).to eq(lines)
      end
      long = RuntimeError.new("x")
      long.set_backtrace(["y" * 5000])
      expect(described_class.failure(long, "retryable")["backtrace"].first.bytesize).to be <= 1024
    end

    it "sanitizes a message that is not a String, and an error code" do
      e = RuntimeError.new("x")
      e.define_singleton_method(:message) { 42 }
      expect(described_class.failure(e, "permanent", error_code: :bad_sku))
        .to include("message" => "42", "kind" => "permanent", "error_code" => "bad_sku")
    end
  end

  describe ".error_result_failure" do
    it "turns an error result with garbage values into a clean failure" do
      weird = Object.new
      def weird.to_s = "weird \xff"
      result = TaskerCore::Types::StepHandlerCallResult.error(message: weird, error_type: :RateLimited,
                                                              retry_after: Object.new, error_code: 429)
      failure = described_class.error_result_failure(result)
      expect(failure).to include("fault" => false, "kind" => "retryable", "error_class" => "RateLimited",
                                 "message" => "weird \uFFFD", "retry_after" => nil, "error_code" => "429",
                                 "metadata" => nil)
      expect(failure["backtrace"].first).to match(/step_execution_spec\.rb:\d+/)
      expect_contract(failure)
      permanent = TaskerCore::Types::StepHandlerCallResult.error(message: "no", retryable: false, error_type: "",
                                                                 retry_after: 1e300)
      expect(described_class.error_result_failure(permanent))
        .to include("kind" => "permanent", "error_class" => "TaskerCore::Errors::PermanentError",
                    "message" => "no", "retry_after" => 3600.0)
    end
  end

  describe ".deliver (real native step events, no engine)" do
    let(:bench) { TaskerCore::Native::Bench }
    let(:log) { StringIO.new }
    let(:logger) { Logger.new(log) }

    before { bench.prepare(4) }

    it "replaces an outcome the extension refuses by a plain failure, and never raises" do
      event = bench.next_event(false)
      # A kind the extension refuses (ValidationError), the step still open.
      refused = { "fault" => false, "kind" => "bogus", "error_class" => "X", "message" => "m",
                  "backtrace" => [], "retry_after" => nil, "error_code" => nil }
      expect { described_class.deliver(event, refused, logger) }.not_to raise_error
      expect(event.completed?).to be(true)
      expect(log.string).to match(/its outcome could not be handed back .*recording that as its failure/)

      other = bench.next_event(false)
      expect { described_class.deliver(other, :not_an_outcome, logger) }.not_to raise_error
      expect(other.completed?).to be(true)
    end

    it "only logs when the step was handed back already" do
      event = bench.next_event(false)
      described_class.deliver(event, TaskerCore::Types::StepHandlerCallResult.success(result: { "a" => 1 }), logger)
      expect(event.completed?).to be(true)
      expect { described_class.deliver(event, described_class.failure(raised, "retryable"), logger) }.not_to raise_error
      expect(log.string).to match(/not handed back: .*already completed/)
    end
  end
end

RSpec.describe TaskerCore::ErrorReporter do
  it "survives error handlers that raise anything, and keeps reporting in order" do
    seen = Queue.new
    handlers = [
      ->(_e, _c) { raise Exception, "handler bug" }, # rubocop:disable Lint/RaiseException
      ->(e, _c) { e.message }, # raises: the exception's #message is broken
      ->(_e, c) { exit if c["n"] == 1 },
      ->(_e, c) { seen << c["n"] }
    ]
    broken = RuntimeError.new("x")
    broken.define_singleton_method(:message) { raise NoMethodError, "nope" }
    log = StringIO.new
    reporter = described_class.new(handlers, Logger.new(log))
    3.times { |n| reporter.report(broken, { "n" => n }) }
    reporter.stop(timeout: 5)
    expect(Array.new(seen.size) { seen.pop }).to eq([0, 1, 2])
    expect(log.string).to include("raised Exception: handler bug").and include("raised SystemExit: exit")
  end
end
