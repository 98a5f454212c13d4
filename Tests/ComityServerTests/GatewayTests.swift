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

/// The service gateway through a real server, a real PostgreSQL and real HTTP backends standing in for replicas
/// (the agents' health reports are written as the heartbeat route writes them).
@Suite(
    "Service gateway", .enabled(if: ProcessInfo.processInfo.environment["COMITY_TEST_PG_URL"] != nil, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct GatewayTests {
    static let logger: Logger = {
        var logger = Logger(label: "comity.test.gateway")
        logger.logLevel = .error
        return logger
    }()

    /// A backend that says who it is and echoes what it got.
    static func backend(_ name: String) -> some ApplicationProtocol {
        let router = Router()
        for path in ["/", "/**"] {
            for method in [HTTPRequest.Method.get, .post] {
                router.on(RouterPath(path), method: method) { request, context -> Response in try await Self.echo(name, request, context) }
            }
        }
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
    }

    static func echo(_ name: String, _ request: Request, _ context: some RequestContext) async throws -> Response {
        let body = try await request.body.collect(upTo: 1 << 20)
        let text = [
            "backend=\(name)", "target=\(request.head.path ?? "")", "authorization=\(request.headers[.authorization] ?? "none")",
            "x-custom=\(request.headers[HTTPField.Name("X-Custom")!] ?? "none")", "body=\(String(buffer: body))",
        ].joined(separator: "\n")
        var headers = HTTPFields()
        headers[.contentType] = "text/plain"
        headers[HTTPField.Name("X-Backend")!] = name
        return Response(status: .created, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// A fresh migrated database for one test; dropped afterwards.
    static func withDatabase<T: Sendable>(_ body: @Sendable (PostgresClient.Configuration) async throws -> T) async throws -> T {
        let server = try DatabaseURL(try #require(ProcessInfo.processInfo.environment["COMITY_TEST_PG_URL"]))
        let name = "t_\(UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: ""))"
        try await PostgresClient.with(try server.clientConfiguration(maxConnections: 1), logger: logger) { admin in
            try await admin.query(PostgresQuery(unsafeSQL: "create database \(name)"), logger: logger)
        }
        let database = server.with(database: name)
        func drop() async throws {
            try await PostgresClient.with(try server.clientConfiguration(maxConnections: 1), logger: logger) { admin in
                try await admin.query(PostgresQuery(unsafeSQL: "drop database if exists \(name) with (force)"), logger: logger)
            }
        }
        do {
            try await PostgresClient.with(try database.clientConfiguration(maxConnections: 4), logger: logger) { client in
                try await Migrator(logger: logger).migrate(client)
            }
            let result = try await body(try database.clientConfiguration(maxConnections: 10))
            try await drop()
            return result
        } catch {
            try? await drop()
            throw error
        }
    }

    struct World: Sendable {
        var store: Store
        var member: String
        var outsider: String
        var auditor: String
        var hosts: [String: (id: Int64, attempt: Int64)]
    }

    /// DE ⊂ EU, KE and IN; tum's hosts "host-de" and "host-ke"; service llm of project llm with a replica on each, healthy
    /// at `urls[host]`.
    static func seed(_ client: PostgresClient, urls: [String: String]) async throws -> World {
        let store = Store(client: client, logger: logger)
        _ = try await store.addJurisdiction(Jurisdiction(code: "EU"))
        _ = try await store.addJurisdiction(Jurisdiction(code: "DE", within: "EU"))
        _ = try await store.addJurisdiction(Jurisdiction(code: "KE"))
        _ = try await store.addJurisdiction(Jurisdiction(code: "IN"))
        _ = try await store.addRegion(Region(name: "eu-de-1", jurisdiction: "DE"))
        _ = try await store.addRegion(Region(name: "ke-nbo-1", jurisdiction: "KE"))
        _ = try await store.addPartner(Partner(name: "tum", jurisdiction: "DE"))
        _ = try await store.addProject(Project(name: "llm", partner: "tum"))
        _ = try await store.addProject(Project(name: "other", partner: "tum"))
        let adminToken = try #require(try await store.bootstrapAdmin())
        let admin = try #require(try await store.principal(forToken: adminToken))
        var enrolled: [String: Int64] = [:]
        for (name, region) in [("host-de", "eu-de-1"), ("host-ke", "ke-nbo-1")] {
            let join = try await store.createJoinToken(CreateJoinTokenRequest(partner: "tum", region: region), by: admin)
            enrolled[name] = try await store.enroll(
                EnrollRequest(joinToken: join.token, name: name, resources: HostResources(cpuMillis: 4000, memoryBytes: 8 << 30), agentVersion: "test")
            ).hostId
        }
        let spec = JobSpec(
            name: "llm", project: "llm", kind: .inference, command: ["python3", "-m", "http.server"],
            resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30), service: ServiceSpec(replicas: 2, healthPath: "/"))
        _ = try await store.submitService(spec, by: admin)
        _ = try await store.schedulingPass()
        var hosts: [String: (id: Int64, attempt: Int64)] = [:]
        for (name, id) in enrolled {
            let assignment = try #require(try await store.assignments(host: id).first)
            _ = try await store.start(attempt: assignment.attempt, host: id)
            hosts[name] = (id, assignment.attempt)
            try await report(store, host: (id, assignment.attempt), url: try #require(urls[name]))
        }
        return World(
            store: store, member: try await store.createToken(CreateTokenRequest(role: .researcher, project: "llm"), by: admin).token,
            outsider: try await store.createToken(CreateTokenRequest(role: .researcher, project: "other"), by: admin).token,
            auditor: try await store.createToken(CreateTokenRequest(role: .auditor), by: admin).token, hosts: hosts)
    }

    /// What the agent's heartbeat says of the replica on `host`.
    static func report(_ store: Store, host: (id: Int64, attempt: Int64), url: String, healthy: Bool = true) async throws {
        _ = try await store.heartbeat(
            host: host.id, HeartbeatRequest(attempts: [host.attempt], services: [ServiceStatus(attempt: host.attempt, url: url, healthy: healthy)]))
    }

    /// Runs `body` against a live comity-server with two live backends (DE and KE).
    static func withGateway(
        _ body: @Sendable (_ client: any TestClientProtocol, _ world: World, _ backends: [String: Int]) async throws -> Void
    ) async throws {
        try await withDatabase { configuration in
            try await Self.backend("de").test(.live) { de in
                try await Self.backend("ke").test(.live) { ke in
                    let backends = ["host-de": try #require(de.port), "host-ke": try #require(ke.port)]
                    let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
                    var server = ServerConfiguration()
                    server.port = 0
                    let app = try buildApplication(configuration: server, client: client, registry: nil, logger: logger)
                    try await app.test(.live) { comity in
                        let world = try await seed(client, urls: backends.mapValues { "http://127.0.0.1:\($0)" })
                        try await body(comity, world, backends)
                    }
                }
            }
        }
    }

    static func headers(_ token: String, data: String?) -> HTTPFields {
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(token)"
        if let data { headers[HTTPField.Name(GatewayHeader.dataJurisdiction)!] = data }
        return headers
    }

    static func errorBody(_ response: TestResponse) throws -> (code: String, message: String, field: String?) {
        let body = try JSONDecoder().decode(JSONValue.self, from: Data(response.body.readableBytesView))
        guard case .object(let top) = body, case .object(let error)? = top["error"], case .string(let code)? = error["code"],
            case .string(let message)? = error["message"]
        else { throw APIError.invalid(field: "(body)", "not an error body: \(String(buffer: response.body))") }
        var field: String?
        if case .array(let fields)? = error["fields"], case .object(let first)? = fields.first, case .string(let name)? = first["field"] { field = name }
        return (code, message, field)
    }

    @Test("forwards to a replica the data may go to: method, path, query, body and headers; not the token")
    func forwards() async throws {
        try await Self.withGateway { client, world, _ in
            let response = try await client.execute(
                uri: "/v1/gateway/llm/v1/chat?stream=false&q=a%20b", method: .post,
                headers: {
                    var headers = Self.headers(world.member, data: "KE")
                    headers[HTTPField.Name("X-Custom")!] = "kept"
                    return headers
                }(), body: ByteBuffer(string: "{\"prompt\":\"habari\"}"))
            #expect(response.status == .created)
            #expect(response.headers[HTTPField.Name(GatewayHeader.replica)!] == "host-ke")
            #expect(response.headers[HTTPField.Name("X-Backend")!] == "ke")
            let text = String(buffer: response.body)
            #expect(text.contains("backend=ke"))
            #expect(text.contains("target=/v1/chat?stream=false&q=a%20b"), "\(text)")
            #expect(text.contains("authorization=none"), "the API token must not reach the replica: \(text)")
            #expect(text.contains("x-custom=kept"))
            #expect(text.contains("body={\"prompt\":\"habari\"}"))

            // DE data goes to DE only; EU contains DE.
            for area in ["DE", "EU"] {
                for _ in 0..<3 {
                    let answer = try await client.execute(uri: "/v1/gateway/llm/", method: .get, headers: Self.headers(world.member, data: area), body: nil)
                    #expect(answer.headers[HTTPField.Name(GatewayHeader.replica)!] == "host-de")
                }
            }
            // The service's root, without a trailing path.
            let root = try await client.execute(uri: "/v1/gateway/llm", method: .get, headers: Self.headers(world.member, data: "KE"), body: nil)
            #expect(String(buffer: root.body).contains("target=/"))
            // Data that may go to both: both replicas serve, in turn.
            var seen: Set<String> = []
            for _ in 0..<4 {
                let answer = try await client.execute(uri: "/v1/gateway/llm/x", method: .get, headers: Self.headers(world.member, data: "KE, EU"), body: nil)
                #expect(answer.status == .created)
                seen.insert(answer.headers[HTTPField.Name(GatewayHeader.replica)!] ?? "?")
            }
            #expect(seen == ["host-de", "host-ke"])
        }
    }

    @Test("refuses data no replica may receive, saying where the replicas are; 400 without the header")
    func refuses() async throws {
        try await Self.withGateway { client, world, _ in
            let refused = try await client.execute(uri: "/v1/gateway/llm/v1/chat", method: .post, headers: Self.headers(world.member, data: "IN"), body: nil)
            #expect(refused.status == .serviceUnavailable)
            let error = try Self.errorBody(refused)
            #expect(error.code == "no_permitted_replica")
            #expect(error.message == "service llm has 2 healthy replicas, in DE and KE; data from IN may go only to hosts in IN", "\(error.message)")

            let missing = try await client.execute(uri: "/v1/gateway/llm/v1/chat", method: .post, headers: Self.headers(world.member, data: nil), body: nil)
            #expect(missing.status == .badRequest)
            #expect(try Self.errorBody(missing).field == GatewayHeader.dataJurisdiction)

            let unknown = try await client.execute(uri: "/v1/gateway/llm/x", method: .get, headers: Self.headers(world.member, data: "ATLANTIS"), body: nil)
            #expect(unknown.status == .badRequest)
            #expect(try Self.errorBody(unknown).message.contains("ATLANTIS"))

            // No healthy replica at all.
            for host in world.hosts.values { try await Self.report(world.store, host: host, url: "http://127.0.0.1:1", healthy: false) }
            let none = try await client.execute(uri: "/v1/gateway/llm/x", method: .get, headers: Self.headers(world.member, data: "KE"), body: nil)
            #expect(none.status == .serviceUnavailable)
            #expect(try Self.errorBody(none).code == "no_healthy_replica")
            #expect(try Self.errorBody(none).message == "service llm has no healthy replica")
        }
    }

    @Test("a replica that cannot be connected to is skipped once for the next")
    func retriesAnotherReplica() async throws {
        try await Self.withGateway { client, world, _ in
            // The DE replica reports a port nothing listens on.
            try await Self.report(world.store, host: try #require(world.hosts["host-de"]), url: "http://127.0.0.1:1")
            for _ in 0..<4 {
                let answer = try await client.execute(uri: "/v1/gateway/llm/x", method: .get, headers: Self.headers(world.member, data: "KE,DE"), body: nil)
                #expect(answer.status == .created)
                #expect(answer.headers[HTTPField.Name(GatewayHeader.replica)!] == "host-ke")
            }
            // Only the dead one may receive DE data: 502 after trying it.
            let dead = try await client.execute(uri: "/v1/gateway/llm/x", method: .get, headers: Self.headers(world.member, data: "DE"), body: nil)
            #expect(dead.status == .badGateway)
            #expect(try Self.errorBody(dead).code == "replica_unreachable")
        }
    }

    @Test("tenancy: members only; others get 404, auditors 403")
    func tenancy() async throws {
        try await Self.withGateway { client, world, _ in
            let outsider = try await client.execute(uri: "/v1/gateway/llm/x", method: .get, headers: Self.headers(world.outsider, data: "KE"), body: nil)
            #expect(outsider.status == .notFound)
            let auditor = try await client.execute(uri: "/v1/gateway/llm/x", method: .get, headers: Self.headers(world.auditor, data: "KE"), body: nil)
            #expect(auditor.status == .forbidden)
            let anonymous = try await client.execute(uri: "/v1/gateway/llm/x", method: .get, headers: [:], body: nil)
            #expect(anonymous.status == .unauthorized)
            // The endpoints route follows the same scope.
            let endpoints = try await client.execute(uri: "/v1/services/llm/endpoints", method: .get, headers: Self.headers(world.member, data: nil), body: nil)
            #expect(endpoints.status == .ok)
            let list = try WireJSON.sharedDecoder.decode(EndpointList.self, from: Data(endpoints.body.readableBytesView))
            #expect(Set(list.endpoints.map(\.host)) == ["host-de", "host-ke"])
            let hidden = try await client.execute(uri: "/v1/services/llm/endpoints", method: .get, headers: Self.headers(world.outsider, data: nil), body: nil)
            #expect(hidden.status == .notFound)
        }
    }
}
