/**
 * IP addresses and CIDR ranges, and which addresses are not public: the one rule deciding what vmp3 may connect
 * to when it fetches a URL a client gave it (an import, a webhook). Pure: no I/O, no DNS.
 *
 * An address is public unless it falls in one of the ranges of {@linkcode blockedClass}: loopback, private,
 * link-local, shared (CGNAT), unique local, unspecified, multicast, broadcast, reserved, documentation,
 * benchmarking, and IPv6 outside global unicast (2000::/3). IPv6 forms that carry an IPv4 address (IPv4-mapped
 * `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) are judged
 * by that IPv4 address.
 */

/** An IP address: IPv4 as a 32-bit number, IPv6 as a 128-bit bigint. */
export type IpAddress = { version: 4; value: number } | { version: 6; value: bigint };

/** A CIDR range: an address and a prefix length. */
export interface Cidr {
  address: IpAddress;
  prefix: number;
  /** As written when parsed (`10.0.0.0/8`). */
  text: string;
}

/**
 * Parses an IPv4 address in dotted decimal (`127.0.0.1`, the form DNS answers and WHATWG URL hosts take), or an
 * IPv6 address with or without brackets (`::1`, `[::ffff:127.0.0.1]`, `fe80::1%eth0` is refused). Null for
 * anything else (so a host name gives null).
 */
export function parseIp(text: string): IpAddress | null {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v4 = parseIpv4(bare);
  if (v4 !== null) return { version: 4, value: v4 };
  const v6 = parseIpv6(bare);
  return v6 === null ? null : { version: 6, value: v6 };
}

function parseIpv4(text: string): number | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    // Dotted decimal only, no leading zeros: "0177.0.0.1" is octal to some parsers, so it is not ours to guess.
    if (!/^(0|[1-9]\d{0,2})$/.test(part) || Number(part) > 255) return null;
    value = value * 256 + Number(part);
  }
  return value;
}

function parseIpv6(text: string): bigint | null {
  if (!/^[0-9a-f:.]+$/i.test(text)) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (half: string): number[] | null => {
    if (half === "") return [];
    const out: number[] = [];
    const pieces = half.split(":");
    for (const [i, piece] of pieces.entries()) {
      if (piece.includes(".")) {
        // An IPv4 tail ("::ffff:1.2.3.4") stands for the last two groups.
        const v4 = i === pieces.length - 1 ? parseIpv4(piece) : null;
        if (v4 === null) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else if (/^[0-9a-f]{1,4}$/i.test(piece)) {
        out.push(parseInt(piece, 16));
      } else return null;
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (head === null || tail === null) return null;
  // An IPv4 tail may only end the address.
  if (halves.length === 2 && halves[0].includes(".")) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  let value = 0n;
  for (const group of [...head, ...new Array(missing).fill(0), ...tail]) {
    value = (value << 16n) | BigInt(group);
  }
  return value;
}

/** The text form of `address` (`127.0.0.1`, `::1`, not compressed beyond the longest run of zeros). */
export function formatIp(address: IpAddress): string {
  if (address.version === 4) {
    const v = address.value;
    return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
  }
  const groups = Array.from(
    { length: 8 },
    (_, i) => Number((address.value >> BigInt(112 - 16 * i)) & 0xffffn),
  );
  let best = [-1, 0];
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best[1]) best = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best[1] < 2) return hex.join(":");
  return `${hex.slice(0, best[0]).join(":")}::${hex.slice(best[0] + best[1]).join(":")}`;
}

/** Parses `10.0.0.0/8`, `fd00::/8` or a single address (a /32 or /128). Throws a TypeError saying why. */
export function parseCidr(text: string): Cidr {
  const [addressText, prefixText, ...rest] = text.trim().split("/");
  const address = parseIp(addressText);
  if (address === null || rest.length > 0) {
    throw new TypeError(`"${text}" is not an IP address or CIDR range`);
  }
  const bits = address.version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= bits)) {
    throw new TypeError(`"${text}" has a bad prefix length (0 to ${bits} for IPv${address.version})`);
  }
  return { address, prefix, text: text.trim() };
}

/** Parses a comma-separated list of CIDR ranges (empty: none). Throws a TypeError naming a bad entry. */
export function parseCidrList(text: string): Cidr[] {
  return text.split(",").map((s) => s.trim()).filter((s) => s !== "").map(parseCidr);
}

/** Whether `address` lies in `range` (IPv4 ranges never contain IPv6 addresses, nor the other way round). */
export function inCidr(address: IpAddress, range: Cidr): boolean {
  if (address.version !== range.address.version) return false;
  if (address.version === 4) {
    if (range.prefix === 0) return true;
    const mask = (0xffffffff << (32 - range.prefix)) >>> 0;
    return ((address.value & mask) >>> 0) === (((range.address.value as number) & mask) >>> 0);
  }
  const shift = BigInt(128 - range.prefix);
  return (address.value >> shift) === ((range.address.value as bigint) >> shift);
}

const named = (text: string, name: string) => ({ range: parseCidr(text), name });

/** IPv4 ranges that are not public, most specific first, with the class each belongs to. */
const IPV4_BLOCKED = [
  named("255.255.255.255/32", "broadcast"),
  named("0.0.0.0/8", "unspecified (this network)"),
  named("10.0.0.0/8", "private"),
  named("100.64.0.0/10", "shared address space (CGNAT)"),
  named("127.0.0.0/8", "loopback"),
  named("169.254.0.0/16", "link-local"),
  named("172.16.0.0/12", "private"),
  named("192.0.0.0/24", "IETF protocol assignment"),
  named("192.0.2.0/24", "documentation"),
  named("192.88.99.0/24", "reserved (6to4 relay)"),
  named("192.168.0.0/16", "private"),
  named("198.18.0.0/15", "benchmarking"),
  named("198.51.100.0/24", "documentation"),
  named("203.0.113.0/24", "documentation"),
  named("224.0.0.0/4", "multicast"),
  named("240.0.0.0/4", "reserved"),
];

/** IPv6 ranges that are not public, checked after the forms that embed an IPv4 address. */
const IPV6_BLOCKED = [
  named("::/128", "unspecified"),
  named("::1/128", "loopback"),
  named("64:ff9b:1::/48", "local-use NAT64"),
  named("100::/64", "discard-only"),
  named("2001::/32", "Teredo tunnel"),
  named("2001:2::/48", "benchmarking"),
  named("2001:10::/28", "reserved (ORCHID)"),
  named("2001:20::/28", "reserved (ORCHIDv2)"),
  named("2001:db8::/32", "documentation"),
  named("3fff::/20", "documentation"),
  named("5f00::/16", "reserved (SRv6)"),
  named("fc00::/7", "unique local"),
  named("fe80::/10", "link-local"),
  named("fec0::/10", "site-local"),
  named("ff00::/8", "multicast"),
];
const GLOBAL_UNICAST = parseCidr("2000::/3");
const MAPPED = parseCidr("::ffff:0:0/96");
const COMPATIBLE = parseCidr("::/96");
const NAT64 = parseCidr("64:ff9b::/96");
const SIX_TO_FOUR = parseCidr("2002::/16");

/**
 * The IPv4 address an IPv6 address carries and is judged by (IPv4-mapped, IPv4-compatible, NAT64, 6to4), or
 * null. `::` and `::1` carry none.
 */
export function embeddedIpv4(address: IpAddress): IpAddress | null {
  if (address.version !== 6) return null;
  const low32 = Number(address.value & 0xffffffffn);
  if (inCidr(address, MAPPED) || inCidr(address, NAT64)) return { version: 4, value: low32 };
  if (inCidr(address, COMPATIBLE)) return address.value > 1n ? { version: 4, value: low32 } : null;
  if (inCidr(address, SIX_TO_FOUR)) {
    return { version: 4, value: Number((address.value >> 80n) & 0xffffffffn) };
  }
  return null;
}

/**
 * Why `address` is not public: its class ("loopback", "private", "link-local", ...), or null for a public
 * address. An IPv6 address that carries an IPv4 one is judged by it ("loopback (IPv4-mapped)").
 */
export function blockedClass(address: IpAddress): string | null {
  if (address.version === 4) return IPV4_BLOCKED.find((b) => inCidr(address, b.range))?.name ?? null;
  const inner = embeddedIpv4(address);
  if (inner) {
    const name = blockedClass(inner);
    return name === null ? null : `${name} (IPv4 inside IPv6)`;
  }
  const blocked = IPV6_BLOCKED.find((b) => inCidr(address, b.range))?.name;
  if (blocked) return blocked;
  return inCidr(address, GLOBAL_UNICAST) ? null : "reserved";
}

/**
 * Why vmp3 must not connect to `address`: its class (see {@linkcode blockedClass}), or null when it may, being
 * public or inside one of the `allowed` ranges (an IPv6 address carrying an IPv4 one is also allowed by a range
 * holding that IPv4 address).
 */
export function addressRefusal(address: IpAddress, allowed: readonly Cidr[] = []): string | null {
  const inner = embeddedIpv4(address);
  if (allowed.some((range) => inCidr(address, range) || (inner !== null && inCidr(inner, range)))) {
    return null;
  }
  return blockedClass(address);
}
