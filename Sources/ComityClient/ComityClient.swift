import AsyncHTTPClient
import ComityAPI
import ComityCore
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// An error answered by the server (or a transport failure), with the server's code and field errors.
public struct ClientError: Error, Sendable, CustomStringConvertible {
    /// HTTP status; 0 when the server could not be reached.
    public var status: Int
    public var code: String
    public var message: String
    public var fields: [FieldError]
    /// Why the sovereignty rules rejected a job (code `rejected`).
    public var reasons: [Reason]

    public init(status: Int, code: String, message: String, fields: [FieldError] = [], reasons: [Reason] = []) {
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.reasons = reasons
    }

    public var description: String {
        // Servers usually name the fields in the message already; add only those it left out.
        let missing = fields.map(\.description).filter { !message.contains($0) }
        return missing.isEmpty ? message : message + ": " + missing.joined(separator: "; ")
    }
}

/// The typed HTTP client of the Comity API, shared by the agent and the CLI.
public struct ComityClient: Sendable {
    public var server: String
    public var token: String?
    let http: HTTPClient
    let encoder = WireJSON.shared
    let decoder = WireJSON.sharedDecoder

    /// HTTP settings for Comity's callers: a call to an unreachable server fails after at most a 5 s connect, so the
    /// caller's own retry policy decides what happens next. (`HTTPClient.shared` instead keeps retrying the connection
    /// until the request's deadline: a server restart would stall a heartbeat for a minute.)
    public static var failFastConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(5))
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }

    /// A process-wide client with ``failFastConfiguration``; it lives as long as the process (never shut down).
    public static let failFast = HTTPClient(eventLoopGroupProvider: .singleton, configuration: failFastConfiguration)

    /// - Parameters:
    ///   - server: base URL such as `http://127.0.0.1:8700`.
    ///   - token: bearer token, or `nil` for unauthenticated routes.
    ///   - http: the HTTP client to use; ``failFast`` by default.
    public init(server: String, token: String?, http: HTTPClient = ComityClient.failFast) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.token = token
        self.http = http
    }

    public func with(token: String?) -> ComityClient {
        ComityClient(server: server, token: token, http: http)
    }

    // MARK: - Generic transport

    /// Sends a request and decodes the answer.
    public func send<Response: Decodable>(
        _ method: HTTPMethod, _ path: String, query: [String: String?] = [:], body: (some Encodable)? = nil as String?,
        timeout: TimeAmount = .seconds(60), as type: Response.Type = Response.self
    ) async throws -> Response {
        let data = try await raw(method, path, query: query, body: body.map { try encoder.encode($0) }, timeout: timeout)
        do {
            return try decoder.decode(Response.self, from: data)
        } catch {
            throw ClientError(status: 200, code: "bad_response", message: "unexpected answer from \(server)\(path): \(error)")
        }
    }

    /// Sends a request with an already encoded JSON body and returns the raw answer.
    public func raw(
        _ method: HTTPMethod, _ path: String, query: [String: String?] = [:], body: Data?, timeout: TimeAmount = .seconds(60)
    ) async throws -> Data {
        var components = URLComponents()
        components.queryItems = query.compactMap { key, value in value.map { URLQueryItem(name: key, value: $0) } }.sorted { $0.name < $1.name }
        let queryText = components.percentEncodedQuery.map { $0.isEmpty ? "" : "?\($0)" } ?? ""
        var request = HTTPClientRequest(url: server + path + queryText)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.headers.add(name: "Accept", value: "application/json")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch {
            throw ClientError(status: 0, code: "unreachable", message: "cannot reach \(server): \(error)")
        }
        let buffer = try await response.body.collect(upTo: 64 << 20)
        let data = Data(buffer: buffer)
        guard (200..<300).contains(Int(response.status.code)) else {
            if let body = try? decoder.decode(ErrorBody.self, from: data) {
                throw ClientError(status: Int(response.status.code), code: body.error.code, message: body.error.message, fields: body.error.fields ?? [], reasons: body.error.reasons ?? [])
            }
            let text = String(decoding: data.prefix(300), as: UTF8.self)
            throw ClientError(status: Int(response.status.code), code: "http_\(response.status.code)", message: "\(response.status): \(text)")
        }
        return data
    }
}
