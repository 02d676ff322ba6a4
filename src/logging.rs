//! Where log lines go and how they look. Under systemd (stderr is the stream named by
//! `JOURNAL_STREAM`) each line carries its syslog priority as an `<N>` prefix, which
//! journald turns into the entry's priority, and neither a timestamp (journald adds its
//! own) nor colour. Elsewhere colour only when stderr is a terminal (and `NO_COLOR` is
//! not set), so log files and pipes get plain text.

use std::fmt;
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber; `RUST_LOG` overrides `default_level`.
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_journal() {
        builder.with_ansi(false).event_format(JournalLine).init();
    } else {
        // https://no-color.org: any value turns colour off.
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        builder.with_ansi(colour).init();
    }
}

/// Whether stderr is the journal stream systemd gave us (`JOURNAL_STREAM=DEV:INODE`): a
/// child that inherited the variable but not the stream must not use the prefixes.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// `<6>ovs_dbus_relay::daemon: message key=value`.
struct JournalLine;

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>{}: ", event.metadata().target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
