import ArgumentParser
import AsyncHTTPClient
import ComityAPI
import ComityClient
import ComityCore
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

/// `comity-bench gateway`: the latency the service gateway adds. Starts a trivial HTTP backend in this process,
/// makes it the healthy replica of a service on a running comity-server (a simulated host enrolls, its agent takes
/// the replica and reports the backend's URL as the replica's), then times `--requests` sequential GETs straight to
/// the backend and as many through `/v1/gateway/{service}/...`, each over a kept-alive connection.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Latency the service gateway adds: direct vs via /v1/gateway, p50/p99 over N requests.")

    @Option(help: "Server URL.") var server: String = "http://127.0.0.1:8700"
    @Option(help: "An admin token.") var token: String
    @Option(help: "Requests per path (after a warm-up of 50 each).") var requests: Int = 1_000
    @Option(help: "Write the JSON object here.") var out: String?

    func run() async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let router = Router()
        router.get("/") { _, _ in "ok" }
        router.get("/**") { _, _ in "ok" }
        let backend = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) },
            logger: {
                var logger = BenchLogging.logger("comity.bench.gateway")
                logger.logLevel = .critical  // its shutdown at the end is not news
                return logger
            }())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await backend.runService(gracefulShutdownSignals: []) }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next(), port > 0 else { throw BenchError("the backend did not start") }
            let results = try await measure(backendURL: "http://127.0.0.1:\(port)")
            try results.write(to: out)
            group.cancelAll()
        }
    }

    func measure(backendURL: String) async throws -> Results {
        let admin = ComityClient(server: server, token: token)
        let tag = String(UUID().uuidString.prefix(8).lowercased())
        try await ignoringConflict { _ = try await admin.addJurisdiction(Jurisdiction(code: "GW")) }
        try await ignoringConflict { _ = try await admin.addRegion(Region(name: "gw-1", jurisdiction: "GW")) }
        // A partner and project of its own each run, so the replica can only go to this run's host.
        let partner = "gw-bench-\(tag)"
        _ = try await admin.addPartner(Partner(name: partner, jurisdiction: "GW"))
        _ = try await admin.addProject(Project(name: partner, partner: partner))
        let join = try await admin.createJoinToken(CreateJoinTokenRequest(partner: partner, region: "gw-1"))
        let enrolled = try await admin.enroll(
            EnrollRequest(
                joinToken: join.token, name: "gw-host-\(tag)", resources: HostResources(cpuMillis: 4000, memoryBytes: 8 << 30), agentVersion: "bench"))
        let agent = admin.with(token: enrolled.token)
        let service = "gw-echo-\(tag)"
        let document: JSONValue = .object([
            "name": .string(service), "project": .string(partner), "kind": .string("inference"),
            "command": .array([.string("true")]), "resources": .object(["cpus": .number(0.1), "memory": .string("64Mi")]),
        ])
        _ = try await admin.submit(document)
        var assignment: Assignment?
        for _ in 0..<10 where assignment == nil { assignment = try await agent.assignments(waitSeconds: 5).first }
        guard let assignment else { throw BenchError("the replica was not assigned to the bench host") }
        _ = try await agent.start(attempt: assignment.attempt)
        let status = ServiceStatus(attempt: assignment.attempt, url: backendURL, healthy: true)
        _ = try await agent.heartbeat(HeartbeatRequest(attempts: [assignment.attempt], services: [status]))
        say("gateway: service \(service) answers at \(backendURL); \(requests) requests each way")

        let results = try await withHTTPClient { http in
            var direct = HTTPClientRequest(url: backendURL + "/ping")
            direct.method = .GET
            var viaGateway = HTTPClientRequest(url: server + "/v1/gateway/\(service)/ping")
            viaGateway.method = .GET
            viaGateway.headers.add(name: "Authorization", value: "Bearer \(token)")
            viaGateway.headers.add(name: GatewayHeader.dataJurisdiction, value: "GW")
            func time(_ request: HTTPClientRequest, count: Int) async throws -> [Double] {
                var samples: [Double] = []
                samples.reserveCapacity(count)
                for _ in 0..<count {
                    let start = Ticks.now()
                    let response = try await http.execute(request, timeout: .seconds(10))
                    _ = try await response.body.collect(upTo: 1 << 20)
                    guard response.status == .ok else { throw BenchError("\(request.url) answered \(response.status)") }
                    samples.append(Ticks.seconds(from: start, to: Ticks.now()) * 1000)
                }
                return samples
            }
            _ = try await time(direct, count: 50)
            _ = try await time(viaGateway, count: 50)
            // Interleaved halves, so that drift in the machine's load weighs on both alike.
            var directSamples: [Double] = []
            var gatewaySamples: [Double] = []
            for _ in 0..<2 {
                directSamples += try await time(direct, count: requests / 2)
                gatewaySamples += try await time(viaGateway, count: requests / 2)
                _ = try await agent.heartbeat(HeartbeatRequest(attempts: [assignment.attempt], services: [status]))
            }
            let d = Percentiles(directSamples)
            let g = Percentiles(gatewaySamples)
            var results = Results()
            results.set("gateway_requests", directSamples.count)
            results.set("gateway_direct_p50_ms", d.median, digits: 3)
            results.set("gateway_direct_p99_ms", d.at(99), digits: 3)
            results.set("gateway_via_p50_ms", g.median, digits: 3)
            results.set("gateway_via_p99_ms", g.at(99), digits: 3)
            results.set("gateway_added_p50_ms", g.median - d.median, digits: 3)
            results.set("gateway_added_p99_ms", g.at(99) - d.at(99), digits: 3)
            say(
                String(
                    format: "gateway: direct p50 %.3f ms p99 %.3f ms; via gateway p50 %.3f ms p99 %.3f ms; added p50 %.3f ms",
                    d.median, d.at(99), g.median, g.at(99), g.median - d.median))
            return results
        }
        _ = try await admin.scaleService(service, replicas: 0)
        _ = try await agent.finish(attempt: assignment.attempt, FinishRequest(outcome: .stopped))
        return results
    }
}
