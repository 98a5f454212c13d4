import ComityAPI
import ComityCore
import ComityStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOFoundationCompat

/// The one mapping from failures to HTTP answers: a status, a stable code, a one-line message, field errors.
package struct APIError: HTTPResponseError, Sendable {
    package var status: HTTPResponse.Status
    package var code: String
    package var message: String
    package var fields: [FieldError]?
    package var reasons: [Reason]?

    package init(_ status: HTTPResponse.Status, code: String, _ message: String, fields: [FieldError]? = nil, reasons: [Reason]? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.reasons = reasons
    }

    package static func unauthorized(_ message: String = "a valid bearer token is required") -> APIError {
        APIError(.unauthorized, code: "unauthorized", message)
    }

    package static func forbidden(_ message: String) -> APIError { APIError(.forbidden, code: "forbidden", message) }

    package static func notFound(_ what: String) -> APIError { APIError(.notFound, code: "not_found", "\(what) not found") }

    package static func invalid(_ failure: ValidationFailure) -> APIError {
        let summary = failure.errors.count == 1 ? failure.errors[0].description : "\(failure.errors.count) problems: \(failure.description)"
        return APIError(.badRequest, code: "invalid", summary, fields: failure.errors)
    }

    package static func invalid(field: String, _ message: String) -> APIError {
        invalid(ValidationFailure([FieldError(field: field, message: message)]))
    }

    /// Maps a store error; the store never leaks SQL text to clients.
    package init(_ error: StoreError) {
        let fields = error.fields ?? error.field.map { [FieldError(field: $0, message: error.message)] }
        let message = error.field.map { "\($0): \(error.message)" } ?? error.message
        switch error.code {
        case .notFound: self.init(.notFound, code: "not_found", message, fields: fields)
        case .conflict: self.init(.conflict, code: "conflict", message, fields: fields)
        case .invalid: self.init(.badRequest, code: "invalid", message, fields: fields)
        case .rejected: self.init(.unprocessableContent, code: "rejected", message, fields: fields, reasons: error.reasons)
        case .forbidden: self.init(.forbidden, code: "forbidden", message, fields: fields)
        default: self.init(.internalServerError, code: "internal", "internal error; see the server log")
        }
    }

    package func response(from request: Request, context: some RequestContext) throws -> Response {
        let data = try WireJSON.shared.encode(ErrorBody(code: code, message: message, fields: fields, reasons: reasons))
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: data)))
    }
}

/// Encodes a value as the wire's JSON.
/// A response whose body is JSON text built elsewhere.
package func rawJSON(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json; charset=utf-8"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
}

package func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    let data = try WireJSON.shared.encode(value)
    var headers = HTTPFields()
    headers[.contentType] = "application/json; charset=utf-8"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: data)))
}
