import AsyncHTTPClient
import ComityAPI
import ComityClient
import ComityCore
import Foundation
import Logging
import ServiceLifecycle

/// The agent: enrolls (once), heartbeats, long-polls for its host's assignments and runs each one concurrently.
///
/// Run it in a `ServiceGroup` with graceful shutdown on `SIGTERM`/`SIGINT`: on shutdown it stops polling, stops its
/// running jobs (group `SIGTERM`, grace, `SIGKILL`), reports them as errors ("agent shutting down") so the server
/// requeues them, and returns. A 401 from the server ends it with ``AgentError/Code/unauthorized``.
package struct AgentService: Service, CustomStringConvertible {
    package var configuration: AgentConfiguration
    package var logger: Logger
    /// The agent's environment, from which jobs inherit `PATH`, `HOME` and `LANG`.
    package var environment: [String: String]

    package init(
        configuration: AgentConfiguration,
        logger: Logger,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.configuration = configuration
        self.logger = logger
        self.environment = environment
    }

    /// Names the state folder only: the environment and the join token stay out of logs.
    package var description: String { "AgentService(stateDirectory: \(configuration.stateDirectory.path))" }

    /// What the agent works with once it is set up.
    struct Session: Sendable {
        var client: ComityClient
        /// Starts and ends, sent together when they happen together.
        var reporter: AttemptReporter
        var credential: Credential
        var resources: HostResources
        var leftovers: [RunningRecord]
        /// The statuses of the service replicas running now, reported with every heartbeat.
        var services = ServiceBoard()

        init(client: ComityClient, credential: Credential, resources: HostResources, leftovers: [RunningRecord]) {
            self.client = client
            self.reporter = AttemptReporter(client: client)
            self.credential = credential
            self.resources = resources
            self.leftovers = leftovers
        }
    }

    /// Runs the agent until graceful shutdown, with its own HTTP client (see ``httpConfiguration``).
    ///
    /// - Throws: ``AgentError`` when it cannot run: bad configuration, no credential and no join token, enrollment
    ///   refused, inventory impossible, or a 401 from the server.
    package func run() async throws {
        try configuration.validate()
        try await HTTPClient.withHTTPClient(configuration: Self.httpConfiguration) { http in
            try await run(http: http)
        }
    }

    private func run(http: HTTPClient) async throws {
        let session: Session
        do {
            session = try await cancelWhenGracefulShutdown { try await self.setUp(http: http) }
        } catch is CancellationError where Task.isShuttingDownGracefully {
            logger.info("agent stopped before it was set up")
            return
        }
        await reportLeftovers(session)
        let registry = AttemptRegistry()
        try await withGracefulShutdownHandler {
            try await runLoops(session, registry: registry)
        } onGracefulShutdown: {
            registry.close()
        }
        logger.info("agent stopped")
    }

    /// Prepares the state folder, kills what a previous agent left running, takes inventory and enrolls if needed.
    func setUp(http: HTTPClient = .shared) async throws -> Session {
        let state = configuration.stateDirectory
        do {
            try state.prepare()
        } catch {
            throw AgentError(.configuration, "cannot prepare the state folder \(state.path): \(error)")
        }
        let saved = try Credential.load(from: state.credentialPath)
        if saved == nil { try checkCanEnroll() }
        if ProcessGroup.becomeSubreaper() { logger.debug("agent is the reaper of its jobs' orphans") }
        if configuration.runner == .slurm { await cancelSlurmLeftovers() }
        let leftovers = await RunningRecord.killLeftovers(in: state, grace: configuration.killGrace, logger: logger)
        let resources = try await inventory()
        logger.info(
            "host resources",
            metadata: [
                "host.cpus": "\(Quantity.formatCPUs(resources.cpuMillis))",
                "host.memory": "\(Quantity.formatBytes(resources.memoryBytes))",
                "host.gpus": "\(resources.gpus.count)",
            ]
        )
        let credential: Credential
        if let saved {
            if configuration.joinToken != nil {
                logger.info("already enrolled; join token not used", metadata: ["file": "\(state.credentialPath)"])
            }
            credential = saved
        } else {
            credential = try await enroll(resources: resources, http: http)
        }
        let server = configuration.server ?? credential.server
        if server != credential.server {
            logger.warning(
                "server differs from the one that issued the credential",
                metadata: ["server": "\(server)", "credential.server": "\(credential.server)"]
            )
        }
        return Session(
            client: ComityClient(server: server, token: credential.token, http: http),
            credential: credential,
            resources: resources,
            leftovers: leftovers
        )
    }

    /// The host's resources: the `--resources` file when given, detection otherwise.
    func inventory() async throws -> HostResources {
        var resources: HostResources
        if let file = configuration.resourcesFile {
            do {
                resources = try ResourcesFile.load(path: file)
            } catch {
                throw AgentError(.configuration, "--resources \(file): \(error)")
            }
        } else if configuration.runner == .slurm {
            resources = try await slurmCapacity()
        } else {
            do {
                resources = try await Inventory.detect(logger: logger)
            } catch {
                throw AgentError(.inventory, error.description)
            }
        }
        resources.runtime = RuntimeProbe.detect(runner: configuration.runner, slurm: await slurmProbe())
        try checkSandbox(resources.runtime)
        return resources
    }

    /// A host configured to sandbox its jobs never runs them unsandboxed: the agent does not start where bwrap does
    /// not work (the server would otherwise place jobs with non-public data on it).
    func checkSandbox(_ runtime: HostRuntime?) throws(AgentError) {
        guard configuration.runner == .sandbox, !(runtime?.available.contains(.sandbox) ?? false) else { return }
        let why = runtime?.notes.first { $0.hasPrefix("sandbox:") } ?? "sandbox: not available"
        throw AgentError(
            .configuration,
            "--runner sandbox, but bubblewrap cannot run jobs on this host (\(why)); install bubblewrap and allow it "
                + "to create namespaces, or start the agent with --runner process (it then takes no jobs with non-public data)"
        )
    }

    /// Fails unless enrollment is possible: a join token and a server URL.
    func checkCanEnroll() throws(AgentError) {
        let path = configuration.stateDirectory.credentialPath
        guard let joinToken = configuration.joinToken, !joinToken.isEmpty else {
            throw AgentError(
                .configuration,
                "no credential in \(path) and no --join-token: enroll this host once with --join-token TOKEN "
                    + "(a partner admin creates one with `comity hosts join-token --partner P --region R`)"
            )
        }
        guard configuration.server != nil else {
            throw AgentError(.configuration, "--server is required to enroll (no credential in \(path) yet)")
        }
    }

    /// Enrolls with the join token (retrying while the server is unreachable) and saves the credential.
    func enroll(resources: HostResources, http: HTTPClient) async throws -> Credential {
        try checkCanEnroll()
        let path = configuration.stateDirectory.credentialPath
        let joinToken = configuration.joinToken ?? ""
        let server = configuration.server ?? ""
        let request = EnrollRequest(
            joinToken: joinToken,
            name: configuration.name.flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultHostName(),
            resources: resources,
            labels: configuration.labels,
            agentVersion: AgentConfiguration.version
        )
        let client = ComityClient(server: server, token: nil, http: http)
        let response: EnrollResponse
        do {
            response = try await Self.retrying("enroll", logger: logger) { try await client.enroll(request) }
        } catch let error as ClientError {
            throw AgentError(
                .enrollment,
                "enrollment with \(server) failed (HTTP \(error.status)): \(error)"
            )
        }
        let credential = Credential(server: server, enrollment: response, enrolledAt: Date())
        do {
            try credential.save(to: path)
        } catch {
            throw AgentError(.configuration, "enrolled as host \(response.hostName) but cannot save \(path): \(error)")
        }
        logger.info("enrolled", metadata: ["host.id": "\(response.hostId)", "host.name": "\(response.hostName)"])
        return credential
    }

    /// Tells the server that attempts a previous agent left behind are over, so their jobs requeue now rather than
    /// when their leases expire. Best effort.
    func reportLeftovers(_ session: Session) async {
        for record in session.leftovers {
            let request = FinishRequest(
                outcome: .error,
                message: "agent restarted; the attempt's processes were killed"
            )
            _ = try? await Self.retrying("finish", logger: logger, attempts: 5) {
                try await session.reporter.finish(attempt: record.attempt, request)
            }
        }
    }

    /// This host's name, cut to what the server accepts (letters, digits, `-`, `_`, `.`).
    static func defaultHostName() -> String {
        let raw = ProcessInfo.processInfo.hostName
        let cleaned = String(
            raw.unicodeScalars.map { AgentConfiguration.isHostName(String($0)) ? Character($0) : "-" }.prefix(128)
        )
        let trimmed = cleaned.trimming("-.")
        return trimmed.isEmpty ? "host" : trimmed
    }

    /// Whether a failed call is worth repeating: the server was unreachable or failed (5xx).
    static func isRetryable(_ error: any Error) -> Bool {
        guard let error = error as? ClientError else { return false }
        return error.status == 0 || error.status >= 500
    }

    /// Runs `operation` until it succeeds, backing off (up to 5 s) while the server is unreachable or failing.
    ///
    /// - Parameters:
    ///   - attempts: give up after this many tries; unlimited by default.
    ///   - deadline: give up once this passes.
    /// - Throws: the first error that is not worth repeating (4xx), the last one when giving up, or
    ///   `CancellationError` when the task is cancelled while waiting.
    static func retrying<T: Sendable>(
        _ call: String,
        logger: Logger,
        attempts: Int = .max,
        deadline: ContinuousClock.Instant? = nil,
        _ operation: () async throws -> T
    ) async throws -> T {
        var backoff = Backoff()
        var tries = 0
        while true {
            do {
                return try await operation()
            } catch {
                tries += 1
                guard isRetryable(error), tries < attempts, deadline.map({ ContinuousClock.now < $0 }) ?? true else {
                    throw error
                }
                let delay = backoff.next()
                logger.log(
                    level: backoff.isWorthWarning ? .warning : .debug,
                    "server call failed; retrying",
                    metadata: ["call": "\(call)", "error": "\(error)", "retry.in": "\(delay)", "failures": "\(tries)"]
                )
                try await Task.sleep(for: delay)
            }
        }
    }

    /// Turns a 401 into the agent's fatal error; other errors pass.
    func failIfUnauthorized(_ error: any Error, server: String) throws {
        guard let error = error as? ClientError, error.status == 401 else { return }
        throw AgentError(
            .unauthorized,
            "the server at \(server) rejected this agent's credential (HTTP 401: \(error.message)); "
                + "the host may have been removed or its token revoked. "
                + "Delete \(configuration.stateDirectory.credentialPath) and start again with a new --join-token"
        )
    }
}
