import assert from "node:assert/strict";
import {
  addressRefusal,
  blockedClass,
  formatIp,
  inCidr,
  type IpAddress,
  parseCidr,
  parseCidrList,
  parseIp,
} from "./ip_ranges.ts";

const ip = (text: string): IpAddress => {
  const address = parseIp(text);
  if (!address) throw new Error(`${text} did not parse`);
  return address;
};

Deno.test("parseIp reads dotted IPv4 and every IPv6 form, and nothing else", () => {
  assert.deepEqual(parseIp("127.0.0.1"), { version: 4, value: 0x7f000001 });
  assert.deepEqual(parseIp("::1"), { version: 6, value: 1n });
  assert.deepEqual(parseIp("[::1]"), { version: 6, value: 1n });
  assert.deepEqual(parseIp("::ffff:127.0.0.1"), { version: 6, value: 0xffff7f000001n });
  assert.deepEqual(parseIp("::ffff:7f00:1"), { version: 6, value: 0xffff7f000001n });
  assert.deepEqual(parseIp("1:2:3:4:5:6:7:8"), { version: 6, value: 0x00010002000300040005000600070008n });
  assert.deepEqual(parseIp("fe80::"), { version: 6, value: 0xfe80n << 112n });
  for (
    const bad of [
      "example.com",
      "0177.0.0.1",
      "127.1",
      "256.0.0.1",
      "1.2.3.4.5",
      "1:2:3:4:5:6:7:8:9",
      "1::2::3",
      "::1.2.3.4:5",
      "fe80::1%eth0",
      "12345::",
      "",
    ]
  ) {
    assert.equal(parseIp(bad), null, bad);
  }
});

Deno.test("formatIp writes addresses back in their usual form", () => {
  for (const text of ["127.0.0.1", "::1", "::", "2001:db8::1", "fe80::1:0:0:1", "1:2:3:4:5:6:7:8"]) {
    assert.equal(formatIp(ip(text)), text);
  }
});

Deno.test("parseCidr and inCidr match ranges of both versions, and refuse bad ones", () => {
  assert.ok(inCidr(ip("172.31.255.255"), parseCidr("172.16.0.0/12")));
  assert.ok(!inCidr(ip("172.32.0.0"), parseCidr("172.16.0.0/12")));
  assert.ok(inCidr(ip("8.8.8.8"), parseCidr("0.0.0.0/0")));
  assert.ok(inCidr(ip("127.0.0.1"), parseCidr("127.0.0.1")));
  assert.ok(!inCidr(ip("127.0.0.2"), parseCidr("127.0.0.1/32")));
  assert.ok(inCidr(ip("fdff::1"), parseCidr("fc00::/7")));
  assert.ok(!inCidr(ip("::1"), parseCidr("0.0.0.0/0")));
  assert.deepEqual(parseCidrList(" 127.0.0.1/32, ::1 ,").map((c) => c.text), ["127.0.0.1/32", "::1"]);
  for (const bad of ["10.0.0.0/33", "::/129", "10.0.0.0/x", "host/8", "10.0.0.0/8/8"]) {
    assert.throws(() => parseCidr(bad), TypeError, bad);
  }
});

Deno.test("blockedClass names every non-public range and lets public addresses through", () => {
  const cases: [string, string | null][] = [
    ["127.0.0.1", "loopback"],
    ["127.255.255.254", "loopback"],
    ["10.0.0.1", "private"],
    ["172.16.0.1", "private"],
    ["192.168.1.1", "private"],
    ["169.254.169.254", "link-local"],
    ["100.64.0.1", "shared address space (CGNAT)"],
    ["0.0.0.0", "unspecified (this network)"],
    ["224.0.0.1", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["240.0.0.1", "reserved"],
    ["192.0.2.1", "documentation"],
    ["198.18.0.1", "benchmarking"],
    ["::1", "loopback"],
    ["::", "unspecified"],
    ["fe80::1", "link-local"],
    ["fd00::1", "unique local"],
    ["ff02::1", "multicast"],
    ["2001:db8::1", "documentation"],
    ["::ffff:127.0.0.1", "loopback (IPv4 inside IPv6)"],
    ["::ffff:a9fe:a9fe", "link-local (IPv4 inside IPv6)"],
    ["::127.0.0.1", "loopback (IPv4 inside IPv6)"],
    ["64:ff9b::10.0.0.1", "private (IPv4 inside IPv6)"],
    ["2002:7f00:1::", "loopback (IPv4 inside IPv6)"],
    ["2001::1", "Teredo tunnel"],
    ["4000::1", "reserved"],
    ["8.8.8.8", null],
    ["1.1.1.1", null],
    ["100.128.0.1", null],
    ["172.32.0.1", null],
    ["2606:4700::1111", null],
    ["::ffff:8.8.8.8", null],
    ["64:ff9b::8.8.8.8", null],
  ];
  for (const [text, expected] of cases) assert.equal(blockedClass(ip(text)), expected, text);
});

Deno.test("addressRefusal lets allowed ranges through, IPv4 inside IPv6 included", () => {
  const allow = parseCidrList("127.0.0.1/32,fd00::/8");
  assert.equal(addressRefusal(ip("127.0.0.1"), allow), null);
  assert.equal(addressRefusal(ip("::ffff:127.0.0.1"), allow), null);
  assert.equal(addressRefusal(ip("fd00::5"), allow), null);
  assert.equal(addressRefusal(ip("127.0.0.2"), allow), "loopback");
  assert.equal(addressRefusal(ip("127.0.0.1")), "loopback");
  assert.equal(addressRefusal(ip("8.8.8.8")), null);
});
