//! Integration tests of the admin CLI binary `aos-cloud-manager`: each test runs the built
//! binary with `--no-default-config-files` and a configuration file of its own, against a
//! fresh MariaDB database (127.0.0.1:3306, or `AOS_TEST_MYSQL_URL`) or SQLite file, and the
//! RabbitMQ broker on 127.0.0.1:5672 where a command checks or uses it.

mod support;

mod agent;
mod all_in_one;
mod balance;
mod config;
mod configure;
mod db;
mod demo;
mod drs;
mod ha_cloud;
mod keystone;
mod node;
mod operator;
mod power;
mod storage;
