# frozen_string_literal: true

require "securerandom"

RSpec.describe "template validation (native)" do
  let(:valid) do
    <<~YAML
      name: ok
      namespace: spec_templates
      version: "1.0.0"
      steps:
        - name: a
          handler: { callable: A }
        - name: b
          handler: { callable: B }
          dependencies: [a]
    YAML
  end

  def validate(body)
    with_template_dir("t.yaml" => body) { |dir| TaskerCore::Native.validate_templates([dir]) }
  end

  it "summarizes valid templates" do
    expect(validate(valid)).to eq([{ "namespace" => "spec_templates", "name" => "ok", "version" => "1.0.0",
                                     "handlers" => %w[A B], "steps" => %w[a b] }])
  end

  {
    "an unknown dependency" => [->(t) { t.sub("[a]", "[zzz]") }, /t\.yaml: step 'b': unknown dependency 'zzz'/],
    "a cycle" => [->(t) { t.sub("handler: { callable: A }", "handler: { callable: A }\n    dependencies: [b]") },
                  /t\.yaml: step '[ab]': dependency cycle/],
    "a duplicate step" => [->(t) { t.sub("- name: b", "- name: a").sub("[a]", "[]") }, /step 'a': duplicate step name/],
    "no steps" => [->(t) { t.sub(/steps:.*/m, "steps: []\n") }, /t\.yaml: template has no steps/],
    "an unknown key" => [->(t) { t.sub("dependencies: [a]", "depends: [a]") }, /step 'b': unknown field `depends`/],
    "a bad version" => [->(t) { t.sub('"1.0.0"', '"one"') }, /t\.yaml: version "one" is invalid/],
    "a bad namespace" => [->(t) { t.sub("spec_templates", "Spec Templates") }, /namespace/],
    "a non-constant handler" => [->(t) { t.sub("callable: A", "callable: \"Kernel.exit\"") }, /step 'a': handler.callable/]
  }.each do |problem, (mutate, message)|
    it "rejects #{problem} naming the file and step" do
      expect { validate(mutate.call(valid)) }.to raise_error(TaskerCore::Errors::TemplateError, message)
    end
  end

  it "rejects a missing path" do
    expect { TaskerCore::Native.validate_templates(["/nonexistent/templates"]) }
      .to raise_error(TaskerCore::Errors::TemplateError, %r{/nonexistent/templates})
  end

  it "refuses to start an engine on a malformed template" do
    with_template_dir("bad.yaml" => valid.sub("[a]", "[zzz]")) do |dir|
      TaskerCore.reset_configuration!
      TaskerCore.configure do |c|
        c.database_url = DatabaseSupport.url
        c.template_paths = [dir]
      end
      expect { TaskerCore.start }.to raise_error(TaskerCore::Errors::TemplateError, /bad\.yaml: step 'b'/)
      expect(TaskerCore.running?).to be(false)
    ensure
      TaskerCore.reset_configuration!
    end
  end

  it "refuses a changed body under a registered version, names it, and accepts the same body again" do
    name = "immutable_#{SecureRandom.hex(4)}"
    first = valid.sub("name: ok", "name: #{name}")
    start = lambda do |body|
      with_template_dir("t.yaml" => body) do |dir|
        TaskerCore.reset_configuration!
        TaskerCore.configure do |c|
          c.database_url = DatabaseSupport.url
          c.template_paths = [dir]
          c.mode = :client
        end
        TaskerCore.start
      ensure
        TaskerCore.stop
        TaskerCore.reset_configuration!
      end
    end
    start.call(first)
    expect { start.call(first) }.not_to raise_error
    changed = first.sub("callable: B", "callable: C")
    refusal = %r{spec_templates/#{name}@1\.0\.0 is already registered with a different body.*new version}
    expect { start.call(changed) }.to raise_error(TaskerCore::Errors::TemplateError, refusal)
    expect { start.call(changed.sub('"1.0.0"', '"1.0.1"')) }.not_to raise_error
  end
end
