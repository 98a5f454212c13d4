import ComityCore
import ComityStore
import Foundation
import Hummingbird
import Logging

/// Resolves `Authorization: Bearer …` into a principal. Routes decide what the principal may do.
///
/// Every `/v1` route requires a valid token except enrollment, which carries its one-time join token in the body.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = AppContext
    let store: Store
    let cache = PrincipalCache()
    static let open: Set<String> = ["/v1/agent/enroll"]

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response) async throws -> Response {
        var context = context
        guard request.uri.path.hasPrefix("/v1/"), !Self.open.contains(request.uri.path) else {
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
            throw APIError.unauthorized()
        }
        let token = String(header.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces)
        guard !token.isEmpty, token.count < 200 else { throw APIError.unauthorized("the token is unknown or revoked") }
        let principal: Principal
        if let known = cache.principal(for: token) {
            principal = known
        } else if let found = try await store.principal(forToken: token) {
            cache.remember(found, for: token)
            principal = found
        } else {
            throw APIError.unauthorized("the token is unknown or revoked")
        }
        context.principal = principal
        context.logger[metadataKey: "principal"] = "\(principal.name)"
        return try await next(request, context)
    }
}

/// Turns store errors into API errors in one place.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = AppContext

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as StoreError {
            if error.code != .invalid, error.code != .conflict, error.code != .forbidden, error.code != .notFound {
                context.logger.error("store failure", metadata: ["error": "\(error)"])
            }
            throw APIError(error)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            throw APIError(error.status, code: "http_\(error.status.code)", error.body ?? error.status.reasonPhrase)
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(String(reflecting: error))"])
            throw APIError(.internalServerError, code: "internal", "internal error; see the server log")
        }
    }
}
