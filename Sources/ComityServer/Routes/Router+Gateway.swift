import AsyncHTTPClient
import ComityAPI
import ComityCore
import ComityStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The service gateway: `/v1/gateway/{service}/{path...}` forwards a request (any of GET, POST, PUT, PATCH, DELETE;
/// body, query and headers) to a healthy replica of the service whose host lies where the request's data may go.
///
/// - The caller states where the data it sends may be processed in `Comity-Data-Jurisdiction` (jurisdiction codes
///   or jurisdiction-set names, comma separated; required: 400 naming the header without it). Only replicas on hosts
///   inside that area are used; when none is, the answer is 503 `no_permitted_replica` (or `no_healthy_replica`) with
///   a message that says where the service's healthy replicas are.
/// - Replicas are taken in turn (round-robin per service); a replica that cannot be connected to is skipped once for
///   the next one. A replica that answers is never retried (the request may have had effects).
/// - The caller must be a member of the service's project (researcher, partner admin of its partner) or an admin; the
///   bearer token is the API's and is not forwarded. The answer carries `Comity-Replica: <host>`.
extension Routes {
    static let gatewayMethods: [HTTPRequest.Method] = [.get, .post, .put, .patch, .delete]
    /// How long a replica may take to answer.
    static let gatewayTimeout: TimeAmount = .seconds(300)

    func addGatewayRoutes(to router: Router<AppContext>) {
        for path in ["/v1/gateway/:service", "/v1/gateway/:service/**"] {
            for method in Self.gatewayMethods {
                router.on(RouterPath(path), method: method) { request, context -> Response in
                    try await gateway(request, context: context)
                }
            }
        }
    }

    func gateway(_ request: Request, context: AppContext) async throws -> Response {
        let principal = try context.require(.admin, .partnerAdmin, .researcher, action: "call services through the gateway")
        let reference = try Self.pathText(context.parameters.require("service"))
        let headerName = HTTPField.Name(GatewayHeader.dataJurisdiction)!
        guard let stated = request.headers[headerName] else {
            throw APIError.invalid(
                field: GatewayHeader.dataJurisdiction,
                "required: where the data you send may be processed, as jurisdiction codes or set names (e.g. KE, or KE,EU)")
        }
        let areas: [String]
        switch ServiceRouting.areas(stated, field: GatewayHeader.dataJurisdiction) {
        case .success(let names): areas = names
        case .failure(let failure): throw APIError.invalid(failure)
        }
        guard let targets = try await store.gatewayTargets(reference, principal: principal) else { throw APIError.notFound("service \(reference)") }
        let unknown = ServiceRouting.unknownAreas(areas, policies: targets.policies)
        guard unknown.isEmpty else {
            throw APIError.invalid(
                field: GatewayHeader.dataJurisdiction, "\(unknown.joined(separator: ", ")): neither a jurisdiction nor a jurisdiction set in force")
        }
        let decision = ServiceRouting.decide(service: targets.service, hosts: targets.replicas.map(\.host), areas: areas, policies: targets.policies)
        guard !decision.permitted.isEmpty else {
            throw APIError(
                .serviceUnavailable, code: targets.replicas.isEmpty ? "no_healthy_replica" : "no_permitted_replica",
                decision.refusal ?? "no replica of service \(targets.service) may receive this data")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: context.maxUploadSize)
        } catch {
            throw APIError(.contentTooLarge, code: "too_large", "the body is larger than \(context.maxUploadSize) bytes")
        }
        let start = gatewayTurns.next("\(targets.project):\(targets.service)")
        let order = (0..<decision.permitted.count).map { targets.replicas[decision.permitted[($0 + start) % decision.permitted.count]] }
        let forwarded = Self.forwardedTarget(request.head.path ?? "/")
        var failures: [String] = []
        // One retry on another replica, only when the first could not be connected to.
        for replica in order.prefix(2) {
            var outbound = HTTPClientRequest(url: Self.trimmed(replica.endpoint.url) + forwarded)
            outbound.method = HTTPMethod(rawValue: request.method.rawValue)
            for field in request.headers where !Self.unforwarded.contains(field.name.canonicalName) {
                outbound.headers.add(name: field.name.rawName, value: field.value)
            }
            if body.readableBytes > 0 || request.method == .post || request.method == .put || request.method == .patch {
                outbound.body = .bytes(body)
            }
            let answer: HTTPClientResponse
            do {
                answer = try await gatewayHTTPClient.execute(outbound, timeout: Self.gatewayTimeout)
            } catch where Self.isConnectFailure(error) {
                context.logger.warning(
                    "gateway replica unreachable", metadata: ["service": "\(targets.service)", "host": "\(replica.endpoint.host)", "error": "\(error)"])
                failures.append("\(replica.endpoint.host): \(error)")
                continue
            } catch {
                throw APIError(
                    .badGateway, code: "replica_failed",
                    "replica \(replica.endpoint.replica) of service \(targets.service) on \(replica.endpoint.host) failed: \(error)")
            }
            var headers = HTTPFields()
            for (name, value) in answer.headers where !Self.unforwarded.contains(name.lowercased()) {
                if let fieldName = HTTPField.Name(name) { headers.append(HTTPField(name: fieldName, value: value)) }
            }
            headers[HTTPField.Name(GatewayHeader.replica)!] = replica.endpoint.host
            return Response(
                status: HTTPResponse.Status(code: Int(answer.status.code), reasonPhrase: answer.status.reasonPhrase), headers: headers,
                body: ResponseBody(asyncSequence: answer.body))
        }
        throw APIError(
            .badGateway, code: "replica_unreachable",
            "no replica of service \(targets.service) could be reached: \(failures.joined(separator: "; "))")
    }

    /// Hop-by-hop headers, the API's credentials and the length (the client sets it) are not passed on.
    static let unforwarded: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding",
        "upgrade", "host", "authorization", "content-length",
    ]

    /// The part of a raw request target after `/v1/gateway/{service}`: `/v1/gateway/llm/v1/chat?x=1` → `/v1/chat?x=1`.
    static func forwardedTarget(_ target: String) -> String {
        let prefix = "/v1/gateway/"
        guard target.hasPrefix(prefix) else { return "/" }
        let rest = target.dropFirst(prefix.count)
        guard let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) else { return "/" }
        let tail = rest[end...]
        return tail.hasPrefix("?") ? "/" + tail : String(tail)
    }

    static func trimmed(_ url: String) -> String {
        var text = url
        while text.hasSuffix("/") { text.removeLast() }
        return text
    }

    /// Whether the request never reached the replica (nothing was sent: safe to try another).
    static func isConnectFailure(_ error: any Error) -> Bool {
        if error is NIOConnectionError { return true }
        if let error = error as? HTTPClientError, error == .connectTimeout { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        if let error = error as? IOError, [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH].contains(error.errnoCode) { return true }
        return false
    }
}

/// The gateway's client: no redirects followed (the caller sees them), no decompression, short connects that fail at
/// once (the gateway tries another replica instead of retrying one that refuses), many connections per replica.
let gatewayHTTPClient: HTTPClient = {
    var configuration = HTTPClient.Configuration()
    configuration.redirectConfiguration = .disallow
    configuration.timeout = .init(connect: .seconds(2), read: .seconds(300))
    configuration.decompression = .disabled
    configuration.connectionPool.retryConnectionEstablishment = false
    configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 256
    return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
}()

/// Round-robin turns, per service.
let gatewayTurns = GatewayTurns()

final class GatewayTurns: Sendable {
    private let turns = Mutex<[String: Int]>([:])

    /// The next turn of `key` (0, 1, 2, …).
    func next(_ key: String) -> Int {
        turns.withLock { turns in
            let turn = turns[key, default: 0]
            turns[key] = turn == Int.max ? 0 : turn + 1
            return turn
        }
    }
}
