# frozen_string_literal: true

class NotifierMailer < ActionMailer::Base
  default from: "tasker@example.com"

  def hello(to)
    mail(to: to, subject: "hello from a job")
  end
end
