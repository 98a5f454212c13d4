import ComityAPI
import ComityCore
import ComityStore
import Foundation
import Hummingbird
import Logging
import NIOCore

/// The audit ledger's routes. Admins and auditors read every entry; a partner admin reads the entries that concern
/// its partner, and every link of the chain (hashes only), so that it can verify the whole ledger against the
/// checkpoints it kept.
extension Routes {
    func addAuditRoutes(to router: Router<AppContext>) {
        router.get("/v1/audit/entries") { request, context -> Response in
            let principal = try context.require(.admin, .auditor, .partnerAdmin, action: "read the audit ledger")
            var filter = try Self.auditFilter(request)
            if principal.role == .partnerAdmin {
                if let asked = filter.partner, asked != principal.partner {
                    throw APIError.forbidden("a partner admin reads the entries of its own partner (\(principal.partner ?? "?")) only")
                }
                filter.partner = principal.partner
            }
            let query = request.uri.queryParameters
            let after = try Self.integer(query.get("after"), field: "after", range: 0...Int.max) ?? 0
            let limit = try Self.integer(query.get("limit"), field: "limit", range: 1...50_000) ?? 1_000
            return try json(AuditEntryList(entries: try await store.auditEntries(filter, after: Int64(after), limit: limit)))
        }

        router.get("/v1/audit/chain") { request, context -> Response in
            _ = try context.require(.admin, .auditor, .partnerAdmin, action: "read the audit chain")
            let query = request.uri.queryParameters
            let after = try Self.integer(query.get("after"), field: "after", range: 0...Int.max) ?? 0
            let limit = try Self.integer(query.get("limit"), field: "limit", range: 1...100_000) ?? 10_000
            return try json(AuditChain(links: try await store.auditLinks(after: Int64(after), limit: limit)))
        }

        router.get("/v1/audit/checkpoint") { _, context -> Response in
            _ = try context.require(.admin, .auditor, .partnerAdmin, action: "read audit checkpoints")
            let checkpoint = try await audit.checkpoint(store)
            return try json(
                AuditCheckpointView(size: checkpoint.size, root: Hex.encode(checkpoint.root), text: checkpoint.text, verifierKey: audit.verifierKey))
        }

        router.get("/v1/audit/public-key") { _, context -> Response in
            _ = try context.require(.admin, .auditor, .partnerAdmin, action: "read the audit key")
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: audit.verifierKey + "\n")))
        }
    }

    static func auditFilter(_ request: Request) throws -> AuditFilter {
        let query = request.uri.queryParameters
        func date(_ field: String) throws -> Date? {
            guard let text = query.get(field) else { return nil }
            if let date = try? Date(text, strategy: .iso8601) { return date }
            if let day = try? Date(text + "T00:00:00Z", strategy: .iso8601) { return day }
            throw APIError.invalid(field: field, "expected an ISO 8601 time such as 2026-11-27T10:00:00Z or a date 2026-11-27, got \"\(text)\"")
        }
        return AuditFilter(
            job: try Self.integer(query.get("job"), field: "job", range: 1...Int.max).map(Int64.init),
            host: try Self.integer(query.get("host"), field: "host", range: 1...Int.max).map(Int64.init),
            partner: query.get("partner"), dataset: query.get("dataset"), region: query.get("region"), kind: query.get("kind"),
            since: try date("since"), until: try date("until"))
    }
}

/// Records refused requests (401 and 403) in the audit ledger.
struct DeniedAuditMiddleware: RouterMiddleware {
    typealias Context = AppContext
    let store: Store

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError where error.status == .unauthorized || error.status == .forbidden {
            var actor = "anonymous"
            if let header = request.headers[.authorization], header.hasPrefix("Bearer "),
                let principal = try? await store.principal(forToken: String(header.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces))
            {
                actor = principal.name
            }
            do {
                try await store.auditDenied(
                    actor: actor, method: request.method.rawValue, path: request.uri.path, status: Int(error.status.code), message: error.message)
            } catch {
                context.logger.error("could not record a refused request in the audit ledger", metadata: ["error": "\(error)"])
            }
            throw error
        }
    }
}
