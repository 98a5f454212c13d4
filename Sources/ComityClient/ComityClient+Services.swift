import ComityAPI
import ComityCore
import Foundation
import NIOCore
import NIOHTTP1

/// Services: `docs/openapi.yaml`'s `/v1/services` routes. `name` may be `project:name`.
extension ComityClient {
    public func services(project: String? = nil) async throws -> [ServiceView] {
        try await send(.GET, "/v1/services", query: ["project": project], as: ServiceList.self).services
    }

    public func service(_ name: String) async throws -> ServiceView { try await send(.GET, "/v1/services/\(name.urlPathEscaped)") }

    /// Sets the service's replicas (0 to 64): new replica jobs, or the highest-numbered ones cancelled.
    public func scaleService(_ name: String, replicas: Int) async throws -> ServiceView {
        try await send(.PATCH, "/v1/services/\(name.urlPathEscaped)", body: ScaleRequest(replicas: replicas))
    }

    /// The service's healthy replicas.
    public func endpoints(_ name: String) async throws -> EndpointList {
        try await send(.GET, "/v1/services/\(name.urlPathEscaped)/endpoints")
    }
}
