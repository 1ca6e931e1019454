# frozen_string_literal: true

module TaskerCore
  module Web
    # A task's steps drawn as an SVG graph: one column per depth (a root is depth 0, a step
    # one more than its deepest parent), each step a node with its name and state as text and a
    # `<title>`, each dependency an edge parent → child, coloured by state through CSS classes
    # (`state-<state>`). Every name is escaped.
    module Dag
      # A node's width, in SVG units.
      NODE_W = 180
      # A node's height.
      NODE_H = 44
      # Space between two columns (depths).
      COL_GAP = 70
      # Space between two nodes of a column.
      ROW_GAP = 18
      # Space around the drawing.
      MARGIN = 10
      # The arrowhead at the child's end of every edge.
      ARROW = '<defs><marker id="dag-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" ' \
              'markerHeight="7" orient="auto"><path class="arrowhead" d="M0,0 L10,5 L0,10 z"/></marker></defs>'

      module_function

      # @param steps [Array<Hash>] "name", "state", "dependencies" (parent names)
      # @return [String] an `<svg>` element
      def svg(steps)
        place, width, height = layout(steps)
        edges = steps.flat_map { |s| s["dependencies"].to_a.map { |p| edge(place[p], place[s["name"]]) } }
        nodes = steps.map { |s| node(s, place.fetch(s["name"])) }
        %(<svg class="dag" role="img" aria-label="workflow graph" xmlns="http://www.w3.org/2000/svg" \
width="#{width}" height="#{height}" viewBox="0 0 #{width} #{height}">#{ARROW}#{edges.compact.join}#{nodes.join}</svg>)
      end

      # Where each step's node goes (its top-left corner), and the drawing's size.
      # @return [Array(Hash{String => Array(Integer, Integer)}, Integer, Integer)]
      def layout(steps)
        depth = depths(steps)
        columns = steps.group_by { |s| depth.fetch(s["name"]) }.sort.map(&:last)
        place = {}
        columns.each_with_index do |column, x|
          column.each_with_index do |step, y|
            place[step["name"]] = [MARGIN + (x * (NODE_W + COL_GAP)), MARGIN + (y * (NODE_H + ROW_GAP))]
          end
        end
        width = (MARGIN * 2) + (columns.size * NODE_W) + ([columns.size - 1, 0].max * COL_GAP)
        rows = [columns.map(&:size).max.to_i, 1].max
        height = (MARGIN * 2) + (rows * (NODE_H + ROW_GAP)) - ROW_GAP
        [place, width, height]
      end

      # Depth of every step: its longest path from a root (cycles cannot exist: templates are
      # checked to be acyclic; a parent missing from the list counts as depth 0).
      # @return [Hash{String => Integer}]
      def depths(steps)
        by_name = steps.to_h { |s| [s["name"], s] }
        memo = {}
        visit = lambda do |name, seen|
          return memo[name] if memo.key?(name)
          return 0 if seen.include?(name) || !by_name.key?(name)

          parents = by_name[name]["dependencies"].to_a
          memo[name] = parents.empty? ? 0 : parents.map { |p| visit.call(p, seen + [name]) }.max + 1
        end
        steps.each { |s| visit.call(s["name"], []) }
        memo
      end

      # One step's node, linked to its section of the page.
      # @api private
      def node(step, (x, y))
        name = h(step["name"])
        state = h(step["state"])
        label = h(truncate(step["name"].to_s, 24))
        %(<a href="##{h(anchor(step['name']))}"><g class="node state-#{state}">) +
          %(<title>#{name}: #{state}</title>) +
          %(<rect x="#{x}" y="#{y}" width="#{NODE_W}" height="#{NODE_H}" rx="6"/>) +
          %(<text x="#{x + 10}" y="#{y + 18}" class="name">#{label}</text>) +
          %(<text x="#{x + 10}" y="#{y + 35}" class="state">#{state}</text></g></a>)
      end

      # A dependency's curve, from the parent's right edge to the child's left edge.
      # @api private
      def edge(from, to)
        return nil unless from && to

        x1 = from[0] + NODE_W
        y1 = from[1] + (NODE_H / 2)
        x2 = to[0]
        y2 = to[1] + (NODE_H / 2)
        mid = (x1 + x2) / 2
        %(<path class="edge" marker-end="url(#dag-arrow)" d="M#{x1},#{y1} C#{mid},#{y1} #{mid},#{y2} #{x2},#{y2}"/>)
      end

      # The HTML id of a step's section.
      # @return [String]
      def anchor(name) = "step-#{name.to_s.gsub(/[^A-Za-z0-9_-]/, '_')}"

      # @api private
      # @return [String] `text`, cut to `size` characters with an ellipsis
      def truncate(text, size) = text.length > size ? "#{text[0, size - 1]}…" : text

      # @api private
      # @return [String] HTML-escaped text
      def h(text) = ERB::Util.html_escape(text.to_s)
    end
  end
end
