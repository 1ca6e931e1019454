# frozen_string_literal: true

require "open3"

module TaskerCore
  module Bench
    # Separate "hosts" for `rake bench:scale`: one network namespace per worker process, each
    # joined to this host by a veth pair with addresses from 198.18.0.0/15 (the range reserved
    # for benchmark networks): host side 198.18.<i>.1, the namespace's side 198.18.<i>.2/24.
    # Traffic goes to nothing but loopback and those addresses. Needs root and `ip` (iproute2).
    # Everything created is removed when the block ends, whatever happened in it.
    class ScaleNetwork
      # Names of what this creates: namespaces tasker_scale_<i>, host-side links tsv<i>.
      PREFIX = "tasker_scale_"

      # One worker's namespace and addresses.
      Host = Struct.new(:index, :netns, :host_address, :address) do
        # A command run inside the namespace.
        def wrap(command) = ["ip", "netns", "exec", netns, *command]
      end

      # Run `ip` with these arguments; raises with its output when it fails.
      def self.ip(*args)
        out, status = Open3.capture2e("ip", *args)
        raise "ip #{args.join(' ')} failed: #{out.strip}" unless status.success?

        out
      end

      # What of ours exists now (for tests and for cleaning up after a killed run).
      def self.leftovers
        namespaces = ip("netns", "list").lines.map { |l| l.split.first }.grep(/\A#{PREFIX}\d+\z/o).sort
        links = ip("-o", "link", "show").lines.map { |l| l.split(":")[1].to_s.strip.split("@").first }.grep(/\Atsv\d+\z/).sort
        { namespaces: namespaces, links: links }
      end

      # Remove every namespace and link of ours (a namespace takes its veth end with it).
      def self.remove_all
        left = leftovers
        left[:namespaces].each { |ns| system("ip", "netns", "delete", ns, err: File::NULL) }
        left[:links].each { |link| system("ip", "link", "delete", link, err: File::NULL) }
      end

      # Create `count` hosts, yield them, remove them.
      def self.with_hosts(count)
        raise ArgumentError, "1 to 200 hosts" unless (1..200).cover?(count)

        remove_all
        hosts = (1..count).map { |i| create(i) }
        yield hosts
      ensure
        remove_all
      end

      def self.create(index)
        netns = "#{PREFIX}#{index}"
        host_link = "tsv#{index}"
        peer = "tsp#{index}"
        host_address = "198.18.#{index}.1"
        address = "198.18.#{index}.2"
        ip("netns", "add", netns)
        ip("link", "add", host_link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", netns)
        ip("addr", "add", "#{host_address}/24", "dev", host_link)
        ip("link", "set", host_link, "up")
        ip("netns", "exec", netns, "ip", "addr", "add", "#{address}/24", "dev", peer)
        ip("netns", "exec", netns, "ip", "link", "set", peer, "up")
        ip("netns", "exec", netns, "ip", "link", "set", "lo", "up")
        Host.new(index, netns, host_address, address)
      end
    end
  end
end
