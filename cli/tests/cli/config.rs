//! `config show` and how every command reports a configuration it cannot use.

use crate::support::{Run, config_file, run_cli};

fn assert_names_the_problem(run: &Run, config: &std::path::Path, key: &str) {
    assert!(!run.succeeded(), "a bad value must stop the command:\n{}", run.report());
    let line = run
        .stderr
        .lines()
        .find(|line| line.contains(key))
        .unwrap_or_else(|| panic!("no error line names {key}:\n{}", run.report()));
    assert!(line.contains(&config.display().to_string()), "the line names the file: {line}");
    assert!(line.contains("[node_tracker]"), "the line names the section: {line}");
}

#[test]
fn a_negative_max_down_hosts_stops_config_show_and_db_list_naming_file_section_and_key() {
    let (_directory, config) = config_file("[node_tracker]\nmax_down_hosts = -1\n");
    for command in [["config", "show"], ["db", "list"]] {
        let run = run_cli(&config, &command);
        assert_names_the_problem(&run, &config, "max_down_hosts");
        assert!(run.stdout.is_empty(), "nothing is printed before the error:\n{}", run.report());
    }
}

#[test]
fn a_loop_time_that_is_not_a_number_stops_config_show_and_db_list_naming_file_section_and_key() {
    let (_directory, config) = config_file("[node_tracker]\nloop_time = abc\n");
    for command in [["config", "show"], ["db", "list"]] {
        let run = run_cli(&config, &command);
        assert_names_the_problem(&run, &config, "loop_time");
        assert!(run.stderr.contains("abc"), "the offending value is shown:\n{}", run.report());
    }
}

#[test]
fn every_bad_value_of_a_file_is_reported_in_one_run() {
    let (_directory, config) = config_file("[node_tracker]\nmax_down_hosts = -1\nloop_time = abc\n");
    for command in [["config", "show"], ["db", "list"]] {
        let run = run_cli(&config, &command);
        assert_names_the_problem(&run, &config, "max_down_hosts");
        assert_names_the_problem(&run, &config, "loop_time");
    }
}

#[test]
fn an_unknown_key_in_a_known_section_is_a_warning_and_the_command_succeeds() {
    let (_directory, config) = config_file("[node_tracker]\nfoo = 1\n");
    let run = run_cli(&config, &["config", "show"]);
    assert!(run.succeeded(), "{}", run.report());
    let warning = run
        .stderr
        .lines()
        .find(|line| line.contains("warning") && line.contains("foo"))
        .unwrap_or_else(|| panic!("no warning about foo:\n{}", run.report()));
    assert!(warning.contains("[node_tracker]") && warning.contains(&config.display().to_string()), "{warning}");
    run.assert_row(&["node_tracker", "loop_time", "30", "default"]);
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let (directory, _config) = config_file("");
    let missing = directory.path().join("absent.conf");
    let run = run_cli(&missing, &["config", "show"]);
    assert!(!run.succeeded(), "{}", run.report());
    assert!(run.stderr.contains(&missing.display().to_string()), "{}", run.report());
}

#[test]
fn config_show_lists_the_reference_options_with_their_defaults() {
    let (_directory, config) = config_file("");
    let run = run_cli(&config, &["config", "show"]);
    assert!(run.succeeded(), "{}", run.report());
    run.assert_row(&["Section", "Key", "Value", "Source"]);
    for (section, key, default) in [
        ("DEFAULT", "debug", "False"),
        ("DEFAULT", "dhcp_leases", "/var/lib/dhcp/dhcpd/state/dhcpd.leases, /var/lib/dhcp/dhcpd.leases"),
        ("agent", "enabled", "False"),
        ("agent", "backoff_factor", "0.3"),
        ("api", "port", "9362"),
        ("api", "audit_enabled", "True"),
        ("balancing", "approx", "0.1"),
        ("balancing", "periodic_time", "24"),
        ("drs", "port", "80"),
        ("drs_trigger", "trigger_interval", "600"),
        ("extra_availability_check", "instance_rate", "100"),
        ("host_tasks", "recovery_priority", "5"),
        ("listener", "nova_rabbit_vhost", "/"),
        ("node_sync", "sync_interval", "60"),
        ("node_tracker", "loop_time", "30"),
        ("node_tracker", "max_down_hosts", "0"),
        ("node_tracker", "mutex", "3"),
        ("node_tracker", "mutex_up", "1"),
        ("node_tracker", "timeout_reserv_node_up", "15"),
        ("power", "shutdown_max_tick", "10"),
        ("pxe", "conf_dir", "/var/lib/tftpboot/pxelinux.cfg/"),
        ("storage_sync", "sync_interval", "60"),
    ] {
        run.assert_row(&[section, key, default, "default"]);
    }
    run.assert_row(&[
        "database",
        "url",
        "mysql+pymysql://aos:***@localhost:3306/cloud_manager?charset=utf8",
        "default",
    ]);

    // Every option of the table, in table order, each from its default.
    let rows = run.table_rows();
    let shown: Vec<(&str, &str)> = rows.iter().skip(1).map(|row| (row[0].as_str(), row[1].as_str())).collect();
    let defined: Vec<(&str, &str)> =
        aos_config::definitions::OPTIONS.iter().map(|def| (def.section, def.key)).collect();
    assert_eq!(shown, defined);
    for (row, def) in rows.iter().skip(1).zip(aos_config::definitions::OPTIONS) {
        assert_eq!(row[3], "default", "[{}] {}", def.section, def.key);
        if !def.secret {
            assert_eq!(row[2], def.default, "[{}] {}", def.section, def.key);
        }
    }
}

#[test]
fn config_show_names_the_file_an_overridden_option_comes_from() {
    let (_directory, config) = config_file("[node_tracker]\nloop_time = 45\n[api]\nport = 9999\n");
    let run = run_cli(&config, &["config", "show"]);
    assert!(run.succeeded(), "{}", run.report());
    let file = config.display().to_string();
    run.assert_row(&["node_tracker", "loop_time", "45", &file]);
    run.assert_row(&["api", "port", "9999", &file]);
    run.assert_row(&["node_tracker", "mutex", "3", "default"]);
}

#[test]
fn config_show_never_prints_a_password() {
    let secrets = ["TopSecret123", "DrsSecret456", "RabbitPw789", "DbPw000"];
    let (_directory, config) = config_file(
        "[DEFAULT]\ntransport_url = rabbit://aos:RabbitPw789@127.0.0.1:5672/aos\n\
         [keystone_authtoken]\npassword = TopSecret123\n\
         [drs]\npassword = DrsSecret456\n\
         [database]\nurl = mysql+pymysql://aos:DbPw000@127.0.0.1:3306/x\n",
    );
    let run = run_cli(&config, &["config", "show"]);
    assert!(run.succeeded(), "{}", run.report());
    for secret in secrets {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret), "{secret} printed:\n{}", run.report());
    }
    let file = config.display().to_string();
    run.assert_row(&["keystone_authtoken", "password", "***", &file]);
    run.assert_row(&["drs", "password", "***", &file]);
    run.assert_row(&["database", "url", "mysql+pymysql://aos:***@127.0.0.1:3306/x", &file]);
    run.assert_row(&["DEFAULT", "transport_url", "rabbit://aos:***@127.0.0.1:5672/aos", &file]);
}

#[test]
fn a_bad_value_next_to_a_password_is_reported_without_the_password() {
    let (_directory, config) =
        config_file("[database]\nurl = postgresql://aos:DbPw000@127.0.0.1/x\n[keystone_authtoken]\npassword = Top\n");
    let run = run_cli(&config, &["db", "list"]);
    assert!(!run.succeeded(), "{}", run.report());
    assert!(run.stderr.contains("[database] url"), "{}", run.report());
    assert!(!run.stderr.contains("DbPw000") && !run.stdout.contains("DbPw000"), "{}", run.report());
}
