import ComityAPI
import ComityCore
import ComityStore
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOFoundationCompat

/// The request context: the authenticated principal, and the wire's JSON conventions.
package struct AppContext: RequestContext {
    package var coreContext: CoreRequestContextStorage
    /// Set by ``AuthMiddleware`` for every `/v1` route except enrollment.
    package var principal: Principal?

    package init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.principal = nil
    }

    /// Job documents and agent uploads are small; 4 MiB bounds every body.
    package var maxUploadSize: Int { 4 << 20 }
    package var requestDecoder: JSONDecoder { WireJSON.sharedDecoder }
    package var responseEncoder: JSONEncoder { WireJSON.shared }

    /// The principal, or 401.
    package func requirePrincipal() throws -> Principal {
        guard let principal else { throw APIError.unauthorized() }
        return principal
    }

    /// The principal if its role is one of `roles`, else 403.
    package func require(_ roles: Role..., action: String) throws -> Principal {
        try require(roles, action: action)
    }

    /// The principal if its role is one of `roles`, else 403.
    package func require(_ roles: [Role], action: String) throws -> Principal {
        let principal = try requirePrincipal()
        guard roles.contains(principal.role) else {
            throw APIError.forbidden("role \(principal.role.rawValue) may not \(action)")
        }
        return principal
    }
}

extension Request {
    /// Decodes the JSON body, turning decoding failures into a field-level 400.
    func decodeBody<T: Decodable>(_ type: T.Type, context: AppContext) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: context.maxUploadSize)
        } catch {
            throw APIError(.contentTooLarge, code: "too_large", "the body is larger than \(context.maxUploadSize) bytes")
        }
        do {
            return try WireJSON.sharedDecoder.decode(T.self, from: Data(buffer: buffer))
        } catch let DecodingError.keyNotFound(key, path) {
            throw APIError.invalid(field: (path.codingPath + [key]).fieldPath, "required")
        } catch let DecodingError.typeMismatch(expected, context) {
            throw APIError.invalid(field: context.codingPath.fieldPath, "expected \(expected)")
        } catch let DecodingError.valueNotFound(expected, context) {
            throw APIError.invalid(field: context.codingPath.fieldPath, "expected \(expected), got null")
        } catch let DecodingError.dataCorrupted(context) {
            throw APIError.invalid(field: context.codingPath.fieldPath.isEmpty ? "(body)" : context.codingPath.fieldPath, context.debugDescription)
        } catch {
            throw APIError.invalid(field: "(body)", "expected a JSON document")
        }
    }
}

extension [any CodingKey] {
    /// `resources.gpus[0].model`, in the wire's snake_case.
    var fieldPath: String {
        var path = ""
        for key in self {
            if let index = key.intValue {
                path += "[\(index)]"
            } else {
                let snake = key.stringValue.reduce(into: "") { text, character in
                    if character.isUppercase { text += "_" + character.lowercased() } else { text.append(character) }
                }
                path += path.isEmpty ? snake : ".\(snake)"
            }
        }
        return path
    }
}
