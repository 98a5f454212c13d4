import ComityAPI
import ComityCore
import Foundation
import Testing

/// A pool for services: tum's hosts de1 and de2 in Germany and ke1 in Kenya, each with room for one replica.
struct ServicesPoolTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await Pool.serve(function) { pool in
            for arguments in [
                ["jurisdictions", "add", "EU"], ["jurisdictions", "add", "DE", "--within", "EU"], ["jurisdictions", "add", "KE"],
                ["jurisdictions", "add", "US"],
                ["regions", "add", "eu-de-1", "--jurisdiction", "DE"], ["regions", "add", "ke-nbo-1", "--jurisdiction", "KE"],
                ["partners", "add", "tum", "--jurisdiction", "DE"], ["projects", "add", "llm", "--partner", "tum"],
            ] {
                try await pool.cliOK(arguments)
            }
            for (name, region) in [("de1", "eu-de-1"), ("de2", "eu-de-1"), ("ke1", "ke-nbo-1")] {
                try await pool.startAgent(name, partner: "tum", region: region, resources: "{cpus: 2, memory: 2Gi}")
            }
        }
    }
}

@Suite("End to end: an inference service, scaled across agents, called through the gateway", .serialized,
       .enabled(if: Pool.isAvailable, "needs COMITY_BIN_DIR (run ops/test)"), ServicesPoolTrait())
struct ServicesEndToEndTests {
    var pool: Pool { Pool.current! }

    func endpoints(_ service: String) async throws -> [Endpoint] {
        let result = try await pool.cliOK(["endpoints", service, "--output", "json"])
        return try WireJSON.decoder().decode(EndpointList.self, from: Data(result.stdout.utf8)).endpoints
    }

    /// Calls the gateway with curl; returns the status, the `Comity-Replica` header and the body.
    func gateway(_ path: String, data: String, token: String? = nil) async throws -> (status: Int, replica: String?, body: String) {
        let result = try await pool.run(
            "/usr/bin/curl",
            ["-sS", "-i", "-H", "Authorization: Bearer \(token ?? pool.adminToken)", "-H", "\(GatewayHeader.dataJurisdiction): \(data)",
             "\(pool.server)/v1/gateway/\(path)"])
        #expect(result.status == 0, "\(result)")
        let parts = result.stdout.components(separatedBy: "\r\n\r\n")
        let head = parts.first ?? ""
        let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        let replica = head.components(separatedBy: "\r\n").first { $0.lowercased().hasPrefix("comity-replica:") }
            .map { String($0.dropFirst("comity-replica:".count)).trimmingCharacters(in: .whitespaces) }
        return (status, replica, parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    @Test("a python3 HTTP service: 1 replica, scaled to 3 on 3 agents, endpoints list 3, the gateway forwards only where the data may go")
    func scaleAndCall() async throws {
        let researcher = try await pool.researcherToken(project: "llm")
        let file = try pool.jobFile(
            "web",
            """
            name: web
            project: llm
            kind: inference
            command: "exec python3 -m http.server $PORT --bind 127.0.0.1"
            resources: {cpus: 1, memory: 256Mi}
            service: {replicas: 1, health: {http: /}, health_interval: 1s}
            """)
        _ = try await pool.submit(file, token: researcher)
        try await eventually("the first replica is healthy", timeout: .seconds(60)) { try await endpoints("web").count == 1 }

        try await pool.cliOK(["services", "scale", "web", "--replicas", "3"], token: researcher)
        var healthy: [Endpoint] = []
        try await eventually("three replicas are healthy", timeout: .seconds(60), detail: { "\(healthy)" }) {
            healthy = try await endpoints("web")
            return healthy.count == 3
        }
        #expect(Set(healthy.map(\.host)) == ["de1", "de2", "ke1"], "replicas of one service run on distinct hosts")
        #expect(Set(healthy.map(\.replica)) == [0, 1, 2])
        #expect(healthy.first { $0.host == "ke1" }?.jurisdiction == "KE")
        let table = try await pool.cliOK(["endpoints", "web"], token: researcher)
        #expect(table.stdout.contains("ke1") && table.stdout.contains("http://127.0.0.1:"), "\(table)")
        let show = try await pool.cliOK(["services", "show", "web"], token: researcher)
        #expect(show.stdout.contains("3 wanted, 3 healthy"), "\(show)")

        // Kenyan data goes to the Kenyan replica only; German data to the German ones.
        for _ in 0..<3 {
            let answer = try await gateway("web/", data: "KE", token: researcher)
            #expect(answer.status == 200, "\(answer)")
            #expect(answer.replica == "ke1")
            #expect(answer.body.contains("Directory listing"), "python3's http.server answered: \(answer.body.prefix(200))")
        }
        var german: Set<String> = []
        for _ in 0..<4 {
            let answer = try await gateway("web/", data: "EU", token: researcher)
            #expect(answer.status == 200)
            german.insert(answer.replica ?? "?")
        }
        #expect(german == ["de1", "de2"], "round-robin over the replicas the data may go to")

        // Data that may go only to the US: no replica may take it, and the answer says why.
        let refused = try await gateway("web/", data: "US", token: researcher)
        #expect(refused.status == 503)
        #expect(refused.body.contains("no_permitted_replica"), "\(refused.body)")
        #expect(refused.body.contains("service web has 3 healthy replicas, in "), "\(refused.body)")
        #expect(refused.body.contains("data from US may go only to hosts in US"), "\(refused.body)")

        try await pool.cliOK(["services", "scale", "web", "--replicas", "1"], token: researcher)
        try await eventually("two replicas stop", timeout: .seconds(60)) { try await endpoints("web").map(\.replica) == [0] }
        try await pool.cliOK(["services", "scale", "web", "--replicas", "0"], token: researcher)
        try await eventually("the last replica stops", timeout: .seconds(60)) { try await endpoints("web").isEmpty }
    }
}
