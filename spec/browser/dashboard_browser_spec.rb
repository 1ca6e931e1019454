# frozen_string_literal: true

# The dashboard in a real browser: headless Chromium driven by Capybara + Selenium, against
# TaskerCore::Web served by Puma over the real engine and database. Saves screenshots under
# tmp/screenshots/.

require "capybara/rspec"
require "selenium-webdriver"
require "fileutils"

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

Capybara.register_driver(:tasker_chromium) do |app|
  options = Selenium::WebDriver::Chrome::Options.new
  options.binary = CHROMIUM
  %w[--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --window-size=1400,1100].each do |arg|
    options.add_argument(arg)
  end
  service = Selenium::WebDriver::Service.chrome(path: CHROMEDRIVER)
  Capybara::Selenium::Driver.new(app, browser: :chrome, options: options, service: service)
end

RSpec.describe "the dashboard in a browser", type: :feature do
  let(:screenshots) { File.expand_path("../../tmp/screenshots", __dir__) }

  around do |example|
    unless File.executable?(CHROMIUM) && File.executable?(CHROMEDRIVER)
      raise "the browser spec needs #{CHROMIUM} and #{CHROMEDRIVER} (bin/setup installs chromium and chromium-driver)"
    end

    Capybara.app = TaskerCore::Web
    Capybara.server = :puma, { Silent: true }
    Capybara.server_host = "127.0.0.1"
    Capybara.default_driver = :tasker_chromium
    Capybara.default_max_wait_time = 10
    CheckoutWorkflow.reset!
    FileUtils.mkdir_p(screenshots)
    with_template_dir("checkout.yaml" => CheckoutWorkflow.template("spec_browser")) do |dir|
      with_engine(namespaces: ["spec_browser"], template_paths: [dir]) { example.run }
    end
  ensure
    TaskerCore::Web.reset!
    Capybara.reset_sessions!
  end

  # A screenshot of the page (or of one element of it) under tmp/screenshots/.
  def shot(name, element = nil)
    path = File.join(screenshots, "#{name}.png")
    # The viewport, scrolled to the element when one is given (an element screenshot of a
    # tall section is cut to the viewport anyway, and races the page's own reloads).
    page.execute_script("arguments[0].scrollIntoView({block: 'start'})", element) if element
    page.save_screenshot(path)
    expect(File.size(path)).to be > 5_000
  end

  it "finds a failed task, sees its DAG, retries the fixed step and watches the task complete live" do
    TaskerCore::Web.authorize { |_request| { role: :admin, actor: "browser-operator" } }
    task = TaskerCore::Client.create_task(namespace: "spec_browser", name: "checkout", version: "1.0.0",
                                          context: { "order_id" => 4242 })
    expect(TaskerCore::Client.wait_for(task.uuid, timeout: 15).status).to eq("error")

    visit "/"
    expect(page).to have_css("svg.chart")
    expect(page).to have_content("Queues")
    shot("overview")

    visit "/tasks"
    select "error", from: "status"
    click_button "Filter"
    expect(page).to have_current_path(/status=error/)
    click_link task.uuid

    expect(page).to have_css("svg.dag g.node.state-error", count: 1)
    expect(page).to have_css("svg.dag g.node.state-error title", text: "charge: error", visible: :all)
    expect(page).to have_css("svg.dag path.edge", count: 2)
    expect(page).to have_content("card <b>declined</b> by the gateway") # as text
    shot("task")
    shot("failed_step", page.find("#step-charge"))

    CheckoutWorkflow.fixed = true
    CheckoutWorkflow.charge_seconds = 3 # long enough to see the task running after the retry
    check "live" # live refresh on, before the retry (remembered by the browser)
    within("#step-charge") do
      fill_in "reason", with: "gateway fixed", match: :first
      click_button "Retry step"
    end
    expect(page).to have_content("Step charge will run again.")
    # The charge still runs (3 s): the task shows in_progress, then, by itself, complete.
    expect(page).to have_css("dl dd .badge.state-in_progress", text: "in_progress")
    # No action from here on: the page reloads itself every 5 s until the task is complete.
    expect(page).to have_css("dl dd .badge.state-complete", text: "complete", wait: 25)
    expect(page).to have_css("svg.dag g.node.state-complete", count: 3)
    history = TaskerCore::Client.find_task(task.uuid).step("charge").transitions.map(&:metadata)
    expect(history).to include(a_hash_including("actor" => "browser-operator", "reason" => "gateway fixed"))
  end

  it "draws no action for a read-only operator and refuses a forged POST" do
    task = TaskerCore::Client.create_task(namespace: "spec_browser", name: "checkout", version: "1.0.0",
                                          context: { "order_id" => 1 })
    expect(TaskerCore::Client.wait_for(task.uuid, timeout: 15).status).to eq("error")
    TaskerCore::Web.authorize { |_request| :read_only }
    visit "/tasks/#{task.uuid}"
    expect(page).to have_css("svg.dag g.node.state-error")
    expect(page).to have_no_button
    expect(page).to have_no_css("form[method=post]")
    # A forged form, posted from the page itself (same origin), token or not.
    page.execute_script(<<~JS, "/tasks/#{task.uuid}/steps/charge/retry")
      var form = document.createElement("form");
      form.method = "post"; form.action = arguments[0];
      var reason = document.createElement("input"); reason.name = "reason"; reason.value = "forged";
      form.appendChild(reason); document.body.appendChild(form); form.submit();
    JS
    expect(page).to have_content("read-only access: actions are not allowed")
    expect(TaskerCore::Client.find_task(task.uuid).step("charge").state).to eq("error")
  end
end
