import ComityAPI
import ComityCore
import Logging

extension AgentService {
    /// The executor an assignment runs through: the host's own (``makeExecutor(logger:)``), inside a
    /// ``ServiceSupervisor`` for an inference job, whose statuses go to `services` for the heartbeat.
    ///
    /// A job of kind `inference` without a `service` section runs with ``ServiceSpec``'s defaults.
    func executor(for assignment: Assignment, services: ServiceBoard, logger: Logger) -> any JobExecutor {
        let executor = makeExecutor(logger: logger)
        guard assignment.spec.kind == .inference else { return executor }
        let attempt = assignment.attempt
        return ServiceSupervisor(
            policy: ServiceSupervisor.Policy(assignment.spec.service ?? ServiceSpec()),
            executor: executor,
            advertiseAddress: configuration.advertiseAddress,
            logger: logger,
            onStatus: { status in
                if let status {
                    services.update(status)
                } else {
                    services.remove(attempt)
                }
            }
        )
    }
}
