# frozen_string_literal: true

TaskerCore.configure do |c|
  c.namespaces = ["dummy"]
end
