import AsyncHTTPClient
import NIOCore

extension AgentService {
    /// The agent's own HTTP client settings: a call to an unreachable server fails at once (after at most a 5 s
    /// connect), so the agent's backoff (capped at 5 s) decides when to try again.
    ///
    /// `HTTPClient.shared` instead queues a request while it retries connecting, up to the request's deadline: a
    /// server restart would stall heartbeats for a minute and long-polls for 50 s.
    static var httpConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(5))
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }
}
