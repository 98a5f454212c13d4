import AsyncHTTPClient
import ComityClient
import NIOCore

extension AgentService {
    /// The agent's own HTTP client (created and shut down with the agent) uses ComityClient's fail-fast settings.
    static var httpConfiguration: HTTPClient.Configuration { ComityClient.failFastConfiguration }
}
