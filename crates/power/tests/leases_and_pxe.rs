//! DHCP lease files and PXELINUX files, on the samples of ../shared/bmc-sim (copied to
//! tests/data: a lease journal captured from isc-dhcp-server 4.4 and a per-host pxelinux.cfg
//! file) plus tests/data/dhcpd-extra.leases with the cases the capture lacks.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aos_power::MacAddress;
use aos_power::dhcp_leases::{BindingState, LeaseEnd, LeaseTable, parse_leases};
use chrono::{DateTime, TimeZone, Utc};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn mac(text: &str) -> MacAddress {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, hour, minute, 0).unwrap()
}

fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path).unwrap().lines().position(|line| line.contains(needle)).unwrap() + 1
}

#[test]
fn the_captured_journal_gives_each_mac_its_live_address_later_blocks_winning() {
    let table = LeaseTable::read(&[data("dhcpd.leases")]);
    assert!(table.problems.is_empty(), "{:?}", table.problems);
    let now = at(10, 30);
    assert_eq!(table.address_of(mac("52:54:00:a0:00:01"), now), Some(ip("127.0.2.100")));
    // .101 was active for compute-02, then a later block freed it.
    assert_eq!(table.address_of(mac("52:54:00:a0:00:02"), now), None);
    assert_eq!(table.leases[&ip("127.0.2.101")].state, Some(BindingState::Free));
    assert_eq!(table.address_of(mac("52:54:00:a0:00:04"), now), Some(ip("127.0.2.102")));
    assert_eq!(table.address_of(mac("52:54:00:a0:00:05"), now), None, "free");
    // .104: the first block had ended, the renewal (a later block) is live.
    assert_eq!(table.address_of(mac("52:54:00:a0:00:06"), now), Some(ip("127.0.2.104")));
    assert_eq!(table.leases[&ip("127.0.2.104")].client_hostname.as_deref(), Some("compute-06"));
    assert_eq!(table.leases[&ip("127.0.2.105")].state, Some(BindingState::Abandoned));
    assert_eq!(table.leases[&ip("127.0.2.105")].mac, None);
    // `ends never` stays live for ever; timed leases end.
    assert_eq!(table.leases[&ip("127.0.2.106")].ends, Some(LeaseEnd::Never));
    let years_later = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(table.address_of(mac("52:54:00:a0:00:07"), years_later), Some(ip("127.0.2.106")));
    assert_eq!(table.address_of(mac("52:54:00:a0:00:01"), at(10, 40)), None, "ended at 10:32:51");
}

#[test]
fn several_files_are_read_in_order_with_every_state_and_malformed_blocks_located() {
    let extra = data("dhcpd-extra.leases");
    let table = LeaseTable::read(&[data("dhcpd.leases"), data("absent.leases"), extra.clone()]);
    assert_eq!(table.missing_files, [data("absent.leases")]);
    let now = at(10, 30);
    // compute-02 came back on .120 (epoch time format, `on commit` block, `;` in a string).
    assert_eq!(table.address_of(mac("52:54:00:a0:00:02"), now), Some(ip("127.0.2.120")));
    assert_eq!(table.address_of(mac("52:54:00:a0:00:02"), at(10, 40)), None, "ended at 10:36:40");
    // Two live leases for one MAC: the one that started last.
    assert_eq!(table.address_of(mac("52:54:00:a0:00:08"), now), Some(ip("127.0.2.131")));
    assert_eq!(table.address_of(mac("52:54:00:a0:00:09"), now), None, "expired");
    assert_eq!(table.address_of(mac("52:54:00:a0:00:0a"), now), None, "backup");
    assert_eq!(table.address_of(mac("52:54:00:a0:00:17"), now), None, "host blocks are not leases");
    // The second file's abandoned block supersedes the first file's `ends never`.
    assert_eq!(table.address_of(mac("52:54:00:a0:00:07"), now), None);
    // Malformed blocks are skipped and reported by file and line; what follows is read.
    assert_eq!(table.address_of(mac("52:54:00:a0:00:0b"), now), None);
    assert_eq!(table.address_of(mac("52:54:00:a0:00:0c"), now), None);
    assert_eq!(table.address_of(mac("52:54:00:a0:00:0d"), now), Some(ip("127.0.2.152")));
    let problems: Vec<(usize, &str)> =
        table.problems.iter().map(|problem| (problem.line, problem.message.as_str())).collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(table.problems.iter().all(|problem| problem.file == extra));
    assert_eq!(problems[0].0, line_of(&extra, "lease 127.0.2.999"));
    assert!(problems[0].1.contains("not an IP address"), "{problems:?}");
    assert_eq!(problems[1].0, line_of(&extra, "lease 127.0.2.150"));
    assert!(problems[1].1.contains("not a MAC address"), "{problems:?}");
    assert_eq!(problems[2].0, line_of(&extra, "lease 127.0.2.151"));
    assert!(problems[2].1.contains("not closed"), "{problems:?}");
    assert_eq!(table.problems[0].to_string(), format!("{}:{}: {}", extra.display(), problems[0].0, problems[0].1));

    let live = table.live_addresses(now);
    assert_eq!(live.get(&mac("52:54:00:a0:00:08")), Some(&ip("127.0.2.131")));
    assert_eq!(live.get(&mac("52:54:00:a0:00:01")), Some(&ip("127.0.2.100")));
}

#[test]
fn broken_text_never_panics_and_says_where() {
    let file = Path::new("broken.leases");
    for text in [
        "lease",
        "lease 1.2.3.4 {",
        "}",
        "lease 1.2.3.4 { starts 1 2026/13/45 99:00:00; }",
        "\"open",
        "{{{",
        "lease 1.2.3.4 { ends 3; }",
    ] {
        let (_, problems) = parse_leases(file, text);
        assert!(!problems.is_empty(), "{text:?} is reported");
        assert!(problems.iter().all(|problem| problem.line >= 1), "{problems:?}");
    }
    let (leases, problems) = parse_leases(file, "# only a comment\n\n");
    assert!(leases.is_empty() && problems.is_empty());
}

#[test]
fn pxe_files_render_like_the_sample_and_are_written_and_removed() {
    let sample_path = data("pxelinux.cfg/01-52-54-00-a0-00-01");
    let sample = std::fs::read_to_string(&sample_path).unwrap();
    let host = mac("52:54:00:a0:00:01");
    assert_eq!(sample_path.file_name().unwrap().to_str().unwrap(), host.pxelinux_file_name());
    // The sample as a template: rendering it for its host gives it back byte for byte.
    let template = sample
        .replace("01-52-54-00-a0-00-01", "{bootif}")
        .replace("52:54:00:a0:00:01", "{mac}")
        .replace("compute-01", "{node}");
    assert_eq!(aos_power::pxe::render_pxe_config(&template, "compute-01", host).unwrap(), sample);
    assert!(aos_power::pxe::render_pxe_config(&template, "bad name\nKERNEL evil", host).is_err());

    let conf_dir = tempfile::tempdir().unwrap();
    std::fs::copy(data("pxelinux.cfg/default"), conf_dir.path().join("default")).unwrap();
    let contents = aos_power::pxe::render_pxe_config(aos_power::pxe::DEFAULT_TEMPLATE, "compute-01", host).unwrap();
    assert!(contents.contains("aos.node=compute-01") && contents.contains("DEFAULT compute-node"));
    let path = aos_power::pxe::write_pxe_config(conf_dir.path(), host, &contents).unwrap();
    assert_eq!(path, conf_dir.path().join("01-52-54-00-a0-00-01"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), contents);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644, "readable by the TFTP server");
    // Rewriting replaces; no temporary file is left behind.
    aos_power::pxe::write_pxe_config(conf_dir.path(), host, &sample).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), sample);
    let names: Vec<String> =
        std::fs::read_dir(conf_dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    assert!(aos_power::pxe::remove_pxe_config(conf_dir.path(), host).unwrap());
    assert!(!aos_power::pxe::remove_pxe_config(conf_dir.path(), host).unwrap(), "idempotent");
    assert!(conf_dir.path().join("default").exists(), "the fallback is never touched");

    let error = aos_power::pxe::write_pxe_config(&conf_dir.path().join("missing"), host, &contents).unwrap_err();
    assert!(error.to_string().contains("[pxe] conf_dir"), "{error}");
}
