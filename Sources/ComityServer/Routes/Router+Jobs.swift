import ComityAPI
import ComityCore
import ComityStore
import Foundation
import Hummingbird

/// Submitting and following jobs. A job outside the caller's scope is answered 404, exactly as a missing one.
extension Routes {
    static let maxArray = 100_000

    func addJobRoutes(to router: Router<AppContext>) {
        router.post("/v1/jobs") { request, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, .researcher, action: "submit jobs")
            let document = try await request.decodeBody(JSONValue.self, context: context)
            let spec: JobSpec
            switch JobSpec.validate(document) {
            case .success(let valid): spec = valid
            case .failure(let failure): throw APIError.invalid(failure)
            }
            // A service (kind: inference) becomes its replica jobs.
            if spec.kind == .inference {
                return try await submitService(spec, array: request.uri.queryParameters.get("array"), by: principal)
            }
            if let array = request.uri.queryParameters.get("array") {
                let indices = try Self.arrayIndices(array)
                let specs = indices.map { index in
                    var copy = spec
                    copy.env["COMITY_ARRAY_INDEX"] = String(index)
                    return copy
                }
                let ids = try await store.submit(specs, by: principal)
                return try json(JobSubmission(ids: ids), status: .created)
            }
            let ids = try await store.submit([spec], by: principal)
            guard let job = try await store.job(ids[0], scope: .all) else { throw APIError.notFound("job \(ids[0])") }
            return try json(job, status: .created)
        }

        router.get("/v1/jobs") { request, context -> Response in
            let principal = try context.require(.admin, .auditor, .partnerAdmin, .researcher, action: "list jobs")
            let query = request.uri.queryParameters
            var state: JobState?
            if let text = query.get("state") {
                guard let parsed = JobState(rawValue: text) else {
                    throw APIError.invalid(field: "state", "expected one of \(JobState.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
                }
                state = parsed
            }
            let limit = try Self.integer(query.get("limit"), field: "limit", range: 1...10_000) ?? 100
            let jobs = try await store.jobs(scope: JobScope(principal), state: state, project: query.get("project"), limit: limit)
            return try json(JobList(jobs: jobs))
        }

        router.get("/v1/jobs/:id") { request, context -> Response in
            let principal = try context.require(.admin, .auditor, .partnerAdmin, .researcher, action: "read jobs")
            let id = try context.parameters.require("id", as: Int64.self)
            let scope = JobScope(principal)
            let query = request.uri.queryParameters
            let wait = try Self.integer(query.get("wait"), field: "wait", range: 0...60) ?? 0
            let generation = notifier.generation(of: .job(id))
            guard var job = try await store.job(id, scope: scope) else { throw APIError.notFound("job \(id)") }
            if let text = query.get("wait_while"), wait > 0 {
                guard let waitWhile = JobState(rawValue: text) else {
                    throw APIError.invalid(field: "wait_while", "expected a job state, got \"\(text)\"")
                }
                let deadline = ContinuousClock.now + .seconds(wait)
                var seen = generation
                while job.state == waitWhile, ContinuousClock.now < deadline, !notifier.isShutDown {
                    await notifier.wait(for: .job(id), since: seen, timeout: deadline - ContinuousClock.now)
                    seen = notifier.generation(of: .job(id))
                    job = try await store.job(id, scope: scope) ?? job
                }
            }
            return try json(job)
        }

        router.post("/v1/jobs/:id/cancel") { _, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, .researcher, action: "cancel jobs")
            let id = try context.parameters.require("id", as: Int64.self)
            guard let job = try await store.cancel(job: id, scope: JobScope(principal), by: principal) else {
                throw APIError.notFound("job \(id)")
            }
            return try json(job)
        }

        router.get("/v1/jobs/:id/events") { _, context -> Response in
            let principal = try context.require(.admin, .auditor, .partnerAdmin, .researcher, action: "read jobs")
            let id = try context.parameters.require("id", as: Int64.self)
            guard try await store.job(id, scope: JobScope(principal)) != nil else { throw APIError.notFound("job \(id)") }
            return try json(JobEventList(events: try await store.events(job: id)))
        }

        router.get("/v1/jobs/:id/logs") { request, context -> Response in
            let principal = try context.require(.admin, .auditor, .partnerAdmin, .researcher, action: "read logs")
            let id = try context.parameters.require("id", as: Int64.self)
            let query = request.uri.queryParameters
            let after = try Self.integer(query.get("after"), field: "after", range: 0...Int.max).map(Int64.init) ?? 0
            let wait = try Self.integer(query.get("wait"), field: "wait", range: 0...60) ?? 0
            let scope = JobScope(principal)
            let deadline = ContinuousClock.now + .seconds(wait)
            while true {
                let generation = notifier.generation(of: .job(id))
                guard let job = try await store.job(id, scope: scope) else { throw APIError.notFound("job \(id)") }
                let page = try await store.logs(job: id, after: after)
                let next = page.chunks.last?.seq ?? after
                let complete = job.state.isTerminal && page.chunks.count < 1_000
                if !page.chunks.isEmpty || complete || ContinuousClock.now >= deadline || notifier.isShutDown {
                    return try json(LogPage(chunks: page.chunks, next: next, complete: complete, truncated: page.truncated, state: job.state))
                }
                await notifier.wait(for: .job(id), since: generation, timeout: deadline - ContinuousClock.now)
            }
        }
    }

    /// Parses `1-10000` or `1-10:2` (start-end[:step]) into array indices.
    static func arrayIndices(_ text: String) throws -> [Int] {
        let parts = text.split(separator: ":", maxSplits: 1)
        let bounds = parts[0].split(separator: "-")
        guard bounds.count == 2, let low = Int(bounds[0]), let high = Int(bounds[1]), low >= 0, high >= low,
            let step = parts.count == 2 ? Int(parts[1]) : 1, step >= 1
        else {
            throw APIError.invalid(field: "array", "expected a range like 1-10000 (or 0-99:2), got \"\(text)\"")
        }
        let indices = Array(stride(from: low, through: high, by: step))
        guard indices.count <= maxArray else {
            throw APIError.invalid(field: "array", "expected at most \(maxArray) jobs in one array, got \(indices.count)")
        }
        return indices
    }

    static func integer(_ text: String?, field: String, range: ClosedRange<Int>) throws -> Int? {
        guard let text else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw APIError.invalid(field: field, "expected a whole number from \(range.lowerBound) to \(range.upperBound), got \"\(text)\"")
        }
        return value
    }
}
