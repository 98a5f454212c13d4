import ArgumentParser
import ComityAPI
import ComityCore

// Core's enums parse from their raw values on the command line; `--help` lists the allowed values.
extension JobState: ExpressibleByArgument {}
extension Role: ExpressibleByArgument {}
extension ResourceKind: ExpressibleByArgument {}
extension UsageReport.Grouping: ExpressibleByArgument {}
