import Foundation

/// Short human renderings of times: relative ages and local clock times.
enum TimeText {
    /// A compact age such as `45s`, `12m`, `3h`, `5d` (time from `date` to `now`, never negative).
    static func age(since date: Date, now: Date = Date()) -> String {
        compact(max(0, now.timeIntervalSince(date)))
    }

    /// `12s ago` for a past date, `in 3h` for a future one.
    static func relative(_ date: Date, now: Date = Date()) -> String {
        let interval = now.timeIntervalSince(date)
        return interval >= 0 ? compact(interval) + " ago" : "in " + compact(-interval)
    }

    /// The local wall-clock time `HH:mm:ss`.
    static func clock(_ date: Date) -> String {
        let parts = Calendar.current.dateComponents([.hour, .minute, .second], from: date)
        return String(format: "%02d:%02d:%02d", parts.hour ?? 0, parts.minute ?? 0, parts.second ?? 0)
    }

    /// Local `yyyy-MM-dd HH:mm:ss`, unambiguous in logs and details.
    static func local(_ date: Date) -> String {
        let parts = Calendar.current.dateComponents([.year, .month, .day], from: date)
        return String(format: "%04d-%02d-%02d ", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0) + clock(date)
    }

    /// Local time with its relative age, e.g. `2025-03-14 12:00:01 (5m ago)`.
    static func detailed(_ date: Date?, now: Date = Date()) -> String? {
        date.map { "\(local($0)) (\(relative($0, now: now)))" }
    }

    private static func compact(_ interval: TimeInterval) -> String {
        let seconds = Int(interval)
        switch seconds {
        case ..<60: return "\(seconds)s"
        case ..<3_600: return "\(seconds / 60)m"
        case ..<172_800:
            return seconds % 3_600 / 60 == 0 || seconds >= 36_000
                ? "\(seconds / 3_600)h" : "\(seconds / 3_600)h\(seconds % 3_600 / 60)m"
        default: return "\(seconds / 86_400)d"
        }
    }
}
