import ComityAPI
import ComityCore
import ComityStore
import Foundation
import Hummingbird

/// Fair sharing: standings, usage, grants, quotas, lending limits and GPU weights. The store checks who may change
/// what (a partner admin its own projects' quotas and its own lending); agents are refused here.
extension Routes {
    /// The longest `since` of `GET /v1/usage`, as a duration back from now.
    static let maxUsageSeconds: Int64 = 3_650 * 86_400

    func addSharingRoutes(to router: Router<AppContext>) {
        let human: [Role] = [.admin, .auditor, .partnerAdmin, .researcher]

        router.get("/v1/shares") { _, context -> Response in
            _ = try context.require(human, action: "read shares")
            return try json(try await store.shares())
        }

        router.get("/v1/usage") { request, context -> Response in
            let principal = try context.require(human, action: "read usage")
            let query = request.uri.queryParameters
            let grouping = try Self.usageGrouping(query.get("by"))
            let since = try Self.usageSince(query.get("since"), now: Date())
            let partner = query.get("partner").flatMap { $0.isEmpty ? nil : $0 }
            return try json(try await store.usage(by: grouping, partner: partner, since: since, scope: JobScope(principal)))
        }

        router.get("/v1/grants") { request, context -> Response in
            let principal = try context.require(human, action: "list grants")
            let all = try Self.boolean(request.uri.queryParameters.get("all"), field: "all") ?? false
            return try json(try await store.grants(scope: JobScope(principal), includeRevoked: all))
        }
        router.post("/v1/grants") { request, context -> Response in
            let principal = try context.require(.admin, action: "give grants")
            let body = try await request.decodeBody(GrantRequest.self, context: context)
            return try json(try await store.addGrant(body, by: principal), status: .created)
        }
        router.delete("/v1/grants/:id") { _, context -> Response in
            let principal = try context.require(.admin, action: "revoke grants")
            let id = try context.parameters.require("id", as: Int64.self)
            guard try await store.revokeGrant(id, by: principal) else { throw APIError.notFound("active grant \(id)") }
            return Response(status: .noContent)
        }

        router.get("/v1/quotas") { _, context -> Response in
            let principal = try context.require(human, action: "list quotas")
            return try json(try await store.quotas(scope: JobScope(principal)))
        }
        router.put("/v1/quotas") { request, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, action: "set quotas")
            let body = try await request.decodeBody(QuotaRequest.self, context: context)
            return try json(try await store.setQuota(body, by: principal))
        }
        router.delete("/v1/quotas/:id") { _, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, action: "remove quotas")
            let id = try context.parameters.require("id", as: Int64.self)
            guard try await store.deleteQuota(id, by: principal) else { throw APIError.notFound("quota \(id)") }
            return Response(status: .noContent)
        }

        router.put("/v1/partners/:name/lending") { request, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, action: "set lending limits")
            let partner = try Self.pathText(context.parameters.require("name"))
            let body = try await request.decodeBody(LendingRequest.self, context: context)
            return try json(try await store.setLending(partner: partner, body, by: principal))
        }

        router.get("/v1/gpu-weights") { _, context -> Response in
            _ = try context.require(human, action: "read GPU weights")
            return try json(try await store.gpuWeights())
        }
        router.put("/v1/gpu-weights/:pattern") { request, context -> Response in
            let principal = try context.require(.admin, action: "set GPU weights")
            let pattern = try Self.pathText(context.parameters.require("pattern"))
            let body = try await request.decodeBody(WeightBody.self, context: context)
            try await store.setGPUWeight(pattern, weight: body.weight, by: principal)
            return try json(GPUWeight(pattern: pattern.lowercased(), weight: body.weight))
        }
        router.delete("/v1/gpu-weights/:pattern") { _, context -> Response in
            let principal = try context.require(.admin, action: "remove GPU weights")
            let pattern = try Self.pathText(context.parameters.require("pattern"))
            try await store.setGPUWeight(pattern, weight: nil, by: principal)
            return Response(status: .noContent)
        }
    }

    /// The body of `PUT /v1/gpu-weights/{pattern}`.
    struct WeightBody: Decodable {
        var weight: Double
    }

    /// A path parameter with its percent-encoding removed (`A100%2080GB` is `A100 80GB`).
    static func pathText(_ text: String) throws -> String {
        guard let decoded = text.removingPercentEncoding else {
            throw APIError(.badRequest, code: "http_400", "malformed percent-encoding in the path: \(text)")
        }
        return decoded
    }

    static func usageGrouping(_ text: String?) throws -> UsageReport.Grouping {
        guard let text else { return .partner }
        guard let grouping = UsageReport.Grouping(rawValue: text) else {
            let names = UsageReport.Grouping.allCases.map(\.rawValue).joined(separator: ", ")
            throw APIError.invalid(field: "by", "expected one of \(names), got \"\(text)\"")
        }
        return grouping
    }

    /// `since`: an ISO 8601 time, a date, or a duration back from `now` (`7d`, `12h`); 30 days when absent.
    static func usageSince(_ text: String?, now: Date) throws -> Date {
        guard let text else { return now.addingTimeInterval(-30 * 86_400) }
        if let seconds = Quantity.seconds(text) {
            guard seconds <= maxUsageSeconds else {
                throw APIError.invalid(field: "since", "expected a duration of at most \(maxUsageSeconds / 86_400)d, got \"\(text)\"")
            }
            return now.addingTimeInterval(-Double(seconds))
        }
        let fractional = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        if let date = (try? Date(text, strategy: .iso8601)) ?? (try? fractional.parse(text)) ?? (try? Date(text + "T00:00:00Z", strategy: .iso8601)) {
            return date
        }
        throw APIError.invalid(
            field: "since",
            "expected an ISO 8601 time such as 2026-11-27T10:00:00Z, a date 2026-11-27, or a duration back from now such as 7d or 12h, "
                + "got \"\(text)\"")
    }

    static func boolean(_ text: String?, field: String) throws -> Bool? {
        switch text {
        case nil: nil
        case "true", "1": true
        case "false", "0": false
        case let other?: throw APIError.invalid(field: field, "expected true or false, got \"\(other)\"")
        }
    }
}
