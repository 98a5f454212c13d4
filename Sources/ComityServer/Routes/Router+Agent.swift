import ComityAPI
import ComityCore
import ComityStore
import Hummingbird

/// The agent protocol. Agents only ever call out; every call after enrollment is fenced to the agent's own host.
extension Routes {
    func addAgentRoutes(to router: Router<AppContext>) {
        router.post("/v1/agent/enroll") { request, context -> Response in
            let body = try await request.decodeBody(EnrollRequest.self, context: context)
            return try json(try await store.enroll(body), status: .created)
        }

        router.post("/v1/agent/heartbeat") { request, context -> Response in
            let host = try context.agentHost()
            let body = try await request.decodeBody(HeartbeatRequest.self, context: context)
            let stop = try await store.heartbeat(host: host, body)
            return try json(HeartbeatResponse(stop: stop, leaseSeconds: store.configuration.leaseSeconds))
        }

        router.get("/v1/agent/assignments") { request, context -> Response in
            let host = try context.agentHost()
            let wait = try Self.integer(request.uri.queryParameters.get("wait"), field: "wait", range: 0...60) ?? 0
            let deadline = ContinuousClock.now + .seconds(wait)
            while true {
                let generation = notifier.generation(of: .host(host))
                // Specs go out as stored, not decoded and encoded again: most of a pull's cost in the server.
                let assignments = try await store.rawAssignments(host: host)
                if !assignments.isEmpty || ContinuousClock.now >= deadline || notifier.isShutDown {
                    return rawJSON(try RawAssignment.listJSON(assignments))
                }
                await notifier.wait(for: .host(host), since: generation, timeout: deadline - ContinuousClock.now)
            }
        }

        router.post("/v1/agent/attempts/:id/start") { _, context -> Response in
            let host = try context.agentHost()
            let attempt = try context.parameters.require("id", as: Int64.self)
            return try json(try await store.start(attempt: attempt, host: host))
        }

        router.post("/v1/agent/attempts/:id/logs") { request, context -> Response in
            let host = try context.agentHost()
            let attempt = try context.parameters.require("id", as: Int64.self)
            let body = try await request.decodeBody(LogAppend.self, context: context)
            guard body.data.utf8.count <= 1 << 20 else { throw APIError.invalid(field: "data", "expected at most 1 MiB per chunk") }
            return try json(try await store.appendLog(attempt: attempt, host: host, body))
        }

        router.post("/v1/agent/reports") { request, context -> Response in
            let host = try context.agentHost()
            let body = try await request.decodeBody(AttemptReports.self, context: context)
            guard body.starts.count + body.ends.count <= AttemptReports.limit else {
                throw APIError.invalid(field: "starts", "expected at most \(AttemptReports.limit) starts and ends together")
            }
            for (index, end) in body.ends.enumerated() {
                try Self.requireExitCode(end.report, field: "ends[\(index)].exit_code")
            }
            return try json(try await store.report(host: host, body))
        }

        router.post("/v1/agent/attempts/:id/finish") { request, context -> Response in
            let host = try context.agentHost()
            let attempt = try context.parameters.require("id", as: Int64.self)
            let body = try await request.decodeBody(FinishRequest.self, context: context)
            try Self.requireExitCode(body, field: "exit_code")
            return try json(try await store.finish(attempt: attempt, host: host, body))
        }
    }
}

extension Routes {
    /// An end the process exited from names its exit code.
    static func requireExitCode(_ report: FinishRequest, field: String) throws {
        if report.outcome == .exited, report.exitCode == nil { throw APIError.invalid(field: field, "required when outcome is exited") }
    }
}

extension AppContext {
    /// The host of an agent principal, or 403 for anyone else.
    func agentHost() throws -> Int64 {
        let principal = try require(.agent, action: "use the agent protocol")
        guard let host = principal.hostID else { throw APIError.forbidden("agent credential without a host") }
        return host
    }
}
