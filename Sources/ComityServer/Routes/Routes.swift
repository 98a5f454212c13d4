import ComityStore
import Foundation
import Hummingbird
import Prometheus

/// All HTTP routes of `comity-server`; `docs/openapi.yaml` describes exactly these (a test keeps them in step).
package struct Routes: Sendable {
    let store: Store
    let notifier: Notifier
    let registry: PrometheusCollectorRegistry?
    let audit: AuditSigner

    package func addRoutes(to router: Router<AppContext>) {
        router.get("/healthz") { _, _ -> Response in try json(["status": "ok"]) }
        router.get("/readyz") { _, _ -> Response in
            do {
                try await store.ping()
                return try json(["status": "ready"])
            } catch {
                throw APIError(.serviceUnavailable, code: "unavailable", "the database does not answer")
            }
        }
        router.get("/metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            registry?.emit(into: &buffer)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        addAdminRoutes(to: router)
        addJobRoutes(to: router)
        addAgentRoutes(to: router)
        addPolicyRoutes(to: router)
        addAuditRoutes(to: router)
        addSharingRoutes(to: router)
        addServiceRoutes(to: router)
    }
}
