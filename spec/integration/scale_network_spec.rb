# frozen_string_literal: true

require "rbconfig"
require "socket"
require_relative "../../benches/ruby/scale_network"

# rake bench:scale's separate "hosts": network namespaces joined by veth pairs (198.18.0.0/15),
# reachable from this host, and gone when the benchmark ends, even when it fails.
RSpec.describe TaskerCore::Bench::ScaleNetwork do
  it "makes hosts that reach this one over their veth pair, and removes them when the block fails" do
    expect(Process.uid).to eq(0), "network namespaces need root (bin/test runs as root in CI)"
    expect do
      described_class.with_hosts(2) do |hosts|
        expect(described_class.leftovers).to eq(namespaces: %w[tasker_scale_1 tasker_scale_2], links: %w[tsv1 tsv2])
        expect(hosts.map(&:address)).to eq(%w[198.18.1.2 198.18.2.2])
        server = TCPServer.new(hosts.last.host_address, 0)
        code = "TCPSocket.new(#{hosts.last.host_address.dump}, #{server.addr[1]}).write(`hostname -I`)"
        client = Process.spawn(*hosts.last.wrap([RbConfig.ruby, "-rsocket", "-e", code]))
        peer = server.accept
        # The connection came from the namespace's own address.
        expect(peer.remote_address.ip_address).to eq("198.18.2.2")
        expect(peer.read).to include("198.18.2.2")
        Process.wait(client)
        server.close
        raise "the benchmark failed"
      end
    end.to raise_error("the benchmark failed")
    expect(described_class.leftovers).to eq(namespaces: [], links: [])
  end
end
