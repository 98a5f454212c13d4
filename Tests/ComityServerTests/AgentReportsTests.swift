import ComityAPI
import ComityCore
import ComityStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PostgresNIO
import Testing

@testable import ComityServer

/// `POST /v1/agent/reports` through a real server and a real PostgreSQL: several starts and ends in one request.
@Suite(
    "Agent reports", .enabled(if: ProcessInfo.processInfo.environment["COMITY_TEST_PG_URL"] != nil, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct AgentReportsTests {
    struct World: Sendable {
        var store: Store
        var client: PostgresClient
        /// Agent tokens of hosts "a" and "b".
        var tokens: [String: String]
        var researcher: String
        /// Host a's attempts, in job order.
        var attempts: [Int64]
        var jobs: [Int64]
    }

    /// Hosts a and b of partner tum (DE); three jobs, all placed on host a (b is enrolled after the pass).
    static func withWorld(_ body: @Sendable (_ http: any TestClientProtocol, _ world: World) async throws -> Void) async throws {
        try await GatewayTests.withDatabase { configuration in
            let client = PostgresClient(configuration: configuration, backgroundLogger: GatewayTests.logger)
            var server = ServerConfiguration()
            server.port = 0
            let app = try buildApplication(configuration: server, client: client, registry: nil, logger: GatewayTests.logger)
            try await app.test(.live) { http in
                let store = Store(client: client, logger: GatewayTests.logger)
                _ = try await store.addJurisdiction(Jurisdiction(code: "DE"))
                _ = try await store.addRegion(Region(name: "eu-de-1", jurisdiction: "DE"))
                _ = try await store.addPartner(Partner(name: "tum", jurisdiction: "DE"))
                _ = try await store.addProject(Project(name: "llm", partner: "tum"))
                let adminToken = try #require(try await store.bootstrapAdmin())
                let admin = try #require(try await store.principal(forToken: adminToken))
                func enroll(_ name: String) async throws -> (id: Int64, token: String) {
                    let join = try await store.createJoinToken(CreateJoinTokenRequest(partner: "tum", region: "eu-de-1"), by: admin)
                    let enrolled = try await store.enroll(
                        EnrollRequest(
                            joinToken: join.token, name: name, resources: HostResources(cpuMillis: 8000, memoryBytes: 8 << 30), agentVersion: "test"))
                    return (enrolled.hostId, enrolled.token)
                }
                let a = try await enroll("a")
                let spec = JobSpec(name: "j", project: "llm", command: ["true"], resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 20))
                let jobs = try await store.submit([spec, spec, spec], by: admin)
                // The server's own scheduler may place them first: pass until all three are on host a (a deadline, no sleep).
                let deadline = ContinuousClock.now + .seconds(30)
                var assigned = try await store.assignments(host: a.id)
                while assigned.count < 3, ContinuousClock.now < deadline {
                    _ = try await store.schedulingPass()
                    assigned = try await store.assignments(host: a.id)
                }
                let attempts = assigned.sorted { $0.jobId < $1.jobId }.map(\.attempt)
                try #require(attempts.count == 3)
                let b = try await enroll("b")
                let researcher = try await store.createToken(CreateTokenRequest(role: .researcher, project: "llm"), by: admin).token
                try await body(
                    http, World(store: store, client: client, tokens: ["a": a.token, "b": b.token], researcher: researcher, attempts: attempts, jobs: jobs))
            }
        }
    }

    static func post(_ http: any TestClientProtocol, _ token: String, _ body: String) async throws -> TestResponse {
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(token)"
        headers[.contentType] = "application/json"
        return try await http.execute(uri: "/v1/agent/reports", method: .post, headers: headers, body: ByteBuffer(string: body))
    }

    static func results(_ response: TestResponse) throws -> AttemptReportResults {
        try WireJSON.decoder().decode(AttemptReportResults.self, from: Data(response.body.readableBytesView))
    }

    static func states(_ world: World) async throws -> [JobState] {
        var states: [JobState] = []
        for job in world.jobs { states.append(try #require(try await world.store.job(job, scope: .all)).state) }
        return states
    }

    @Test("starts are applied before ends; each item is answered in order; unknown and other hosts' attempts fail alone")
    func startsThenEnds() async throws {
        try await Self.withWorld { http, world in
            let (a1, a2, a3) = (world.attempts[0], world.attempts[1], world.attempts[2])
            // a1 started and ended in one report; a2 started; an attempt that does not exist.
            let first = try await Self.post(
                http, world.tokens["a"]!, #"{"starts": [\#(a1), 999999, \#(a2)], "ends": [{"attempt": \#(a1), "outcome": "exited", "exit_code": 0}]}"#)
            #expect(first.status == .ok, "\(String(buffer: first.body))")
            let answers = try Self.results(first)
            #expect(answers.starts.map(\.attempt) == [a1, 999999, a2])
            #expect(answers.starts.map(\.state) == [.running, nil, .running])
            #expect(answers.starts.map(\.current) == [true, false, true])
            #expect(answers.starts.map(\.error) == [nil, "not_found", nil])
            #expect(answers.ends.map(\.attempt) == [a1])
            #expect(answers.ends.first?.state == .succeeded && answers.ends.first?.current == false)
            #expect(try await Self.states(world) == [.succeeded, .running, .assigned])

            // Host b cannot end host a's attempt; host a's repeated end changes nothing; a3 fails with exit 3.
            let stranger = try Self.results(
                try await Self.post(http, world.tokens["b"]!, #"{"starts": [\#(a3)], "ends": [{"attempt": \#(a2), "outcome": "exited", "exit_code": 0}]}"#))
            #expect(stranger.starts.map(\.error) == ["not_found"] && stranger.ends.map(\.error) == ["not_found"])
            #expect(try await Self.states(world) == [.succeeded, .running, .assigned])
            let second = try Self.results(
                try await Self.post(
                    http, world.tokens["a"]!,
                    #"{"starts": [\#(a3)], "ends": [{"attempt": \#(a1), "outcome": "exited", "exit_code": 0}, {"attempt": \#(a3), "outcome": "exited", "exit_code": 3}]}"#
                ))
            #expect(second.starts.map(\.state) == [.running])
            #expect(second.ends.map(\.state) == [.succeeded, .failed])
            #expect(try await Self.states(world) == [.succeeded, .running, .failed])
            // Every change is in the ledger once: three starts and two ends.
            try await world.store.chainAudit()
            #expect(try await world.client.number("select count(*) from audit_log where kind = 'started'") == 3)
            #expect(try await world.client.number("select count(*) from audit_log where kind = 'ended'") == 2)
        }
    }

    @Test("a refused report names its field and changes nothing; only agents may report")
    func refused() async throws {
        try await Self.withWorld { http, world in
            let (a1, a2) = (world.attempts[0], world.attempts[1])
            let missingExit = try await Self.post(
                http, world.tokens["a"]!,
                #"{"starts": [\#(a1)], "ends": [{"attempt": \#(a2), "outcome": "error"}, {"attempt": \#(a1), "outcome": "exited"}]}"#)
            #expect(missingExit.status == .badRequest)
            #expect(try GatewayTests.errorBody(missingExit).field == "ends[1].exit_code")
            let tooMany = try await Self.post(http, world.tokens["a"]!, #"{"starts": [\#((0...1000).map { _ in String(a1) }.joined(separator: ","))], "ends": []}"#)
            #expect(tooMany.status == .badRequest)
            #expect(try GatewayTests.errorBody(tooMany).field == "starts")
            let notAnAgent = try await Self.post(http, world.researcher, #"{"starts": [\#(a1)], "ends": []}"#)
            #expect(notAnAgent.status == .forbidden)
            #expect(try await Self.states(world) == [.assigned, .assigned, .assigned])
            #expect(try await world.client.number("select count(*) from job_events where kind = 'running'") == 0)
        }
    }
}

extension PostgresClient {
    /// The single number a query such as `select count(*) …` returns (-1 when it returns no row).
    func number(_ query: PostgresQuery) async throws -> Int64 {
        try await self.query(query, logger: GatewayTests.logger).decode(Int64.self).collect().first ?? -1
    }
}
