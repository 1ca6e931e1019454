# frozen_string_literal: true

# A record passed to jobs as a GlobalID argument (its table is made by the spec).
class Widget < ApplicationRecord
end
