"""Allocation of one address per range set (reference §4.3).

Per range set, in order:
1. a requested IP inside the set is reserved as is (never the range's gateway);
2. otherwise, an address the attachment already holds in the set is a duplicate ADD: refused;
3. otherwise the set is walked round-robin from the address after ``last_reserved_ip.<set>``
   (or from the first range's start), across its ranges and wrapping around, skipping each
   range's gateway; the first free address is reserved.

The store is queried once per ADD (under the lock, ``Store.reservations()``: the refreshed index,
or a full snapshot) and candidates are checked against it in memory - with an index, a string
lookup of the candidate's file name, nothing parsed - so a big, busy range costs one directory
listing plus one ``O_EXCL`` create, not one listing per candidate. ``O_EXCL`` stays the arbiter,
for writers that ignore the lock.

Error codes: an exhausted set or a requested IP held by someone else is TRY_AGAIN_LATER (11) -
it clears when addresses are released; a requested gateway or a requested IP outside every set
is INVALID_CONFIG (7); a duplicate ADD is INTERNAL (999, the reference's generic code: it is a
runtime bug, no spec code describes it); store failures are IO_FAILURE (5).
"""
from __future__ import annotations

from cni.errors import INTERNAL, INVALID_CONFIG, TRY_AGAIN_LATER, CNIError
from hostlocal.addresses import address_of
from hostlocal.record import Record
from hostlocal.store import Owner, warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from hostlocal.addresses import IPAddress
    from hostlocal.config import IPAMConfig, IPRange, RangeSet
    from hostlocal.store import IndexedReservations, Reservation, Snapshot, Store


class Allocation(Record):
    """An address reserved for an attachment, with the range it came from."""

    __slots__ = ("reservation", "ip_range")

    def __init__(self, reservation: Reservation, ip_range: IPRange) -> None:
        self.reservation = reservation
        self.ip_range = ip_range

    @property
    def address(self) -> IPAddress:
        return self.reservation.address

    def result_ip(self) -> dict[str, str]:
        """The result's ``ips`` entry: the address with its subnet's prefix length, and the gateway."""
        return {
            "address": f"{self.address}/{self.ip_range.subnet.prefixlen}",
            "gateway": str(self.ip_range.gateway),
        }


def allocate(store: Store, conf: IPAMConfig, container_id: str, ifname: str) -> list[Allocation]:
    """ADD: one address per range set, all or nothing. Call with the store locked."""
    owner = Owner.attachment(container_id, ifname)
    reservations = store.reservations(build_index=True)
    pending = list(conf.requested_ips)
    done: list[Allocation] = []
    try:
        for index, range_set in enumerate(conf.range_sets):
            requested = _take_requested(pending, range_set)
            try:
                done.append(
                    allocate_from_set(store, reservations, range_set, index, owner=owner, requested=requested)
                )
            except CNIError as err:
                raise CNIError(err.code, f"failed to allocate for range {index}: {err.msg}", err.details) from None
        if pending:
            unmatched = " ".join(str(a) for a in pending)
            raise CNIError(INVALID_CONFIG, f"failed to allocate all requested IPs: {unmatched}")
    except BaseException:
        release_allocations(store, done)
        raise
    return done


def allocate_from_set(
    store: Store,
    reservations: Snapshot | IndexedReservations,
    range_set: RangeSet,
    set_index: int,
    *,
    owner: Owner,
    requested: IPAddress | None,
) -> Allocation:
    """One address from one range set; ``reservations`` is updated with the new reservation."""
    if requested is not None:
        return _allocate_requested(store, reservations, range_set, set_index, owner=owner, requested=requested)
    held = [r for r in reservations.held_by(owner) if range_set.contains(r.address)]
    if held:
        raise CNIError(
            INTERNAL,
            f"{held[0].address} has been allocated to {owner.container_id}, duplicate allocation is not allowed",
        )
    version = range_set.version
    for value, ip_range in candidate_order(range_set, store.last_reserved(set_index)):
        if reservations.taken(version, value):
            continue
        reservation = store.reserve(address_of(version, value), owner, set_index)
        if reservation is None:
            continue  # created behind our back by a writer that does not take the lock
        reservations.add(reservation)
        return Allocation(reservation, ip_range)
    raise CNIError(TRY_AGAIN_LATER, f"no IP addresses available in range set: {range_set}")


def _allocate_requested(
    store: Store,
    reservations: Snapshot | IndexedReservations,
    range_set: RangeSet,
    set_index: int,
    *,
    owner: Owner,
    requested: IPAddress,
) -> Allocation:
    ip_range = range_set.range_for(requested)
    if ip_range is None:
        raise CNIError(INVALID_CONFIG, f"{requested} not in range set {range_set}")
    if requested == ip_range.gateway:
        raise CNIError(INVALID_CONFIG, f"requested ip {requested} is subnet's gateway")
    reservation = store.reserve(requested, owner, set_index)
    if reservation is None:
        raise CNIError(
            TRY_AGAIN_LATER, f"requested IP address {requested} is not available in range set {range_set}"
        )
    reservations.add(reservation)
    return Allocation(reservation, ip_range)


def _take_requested(pending: list[IPAddress], range_set: RangeSet) -> IPAddress | None:
    """Remove and return the first requested IP that lies in ``range_set`` (one per set)."""
    for position, address in enumerate(pending):
        if range_set.contains(address):
            return pending.pop(position)
    return None


def release_allocations(store: Store, allocations: list[Allocation]) -> None:
    """Undo a failed ADD: free exactly what this call reserved (best effort, problems logged)."""
    for allocation in allocations:
        problem = store.remove(allocation.reservation)
        if problem:
            warn(problem)


def candidate_order(range_set: RangeSet, last_reserved: IPAddress | None) -> Iterator[tuple[int, IPRange]]:
    """Every allocatable address of the set once, as (integer value, its range), round-robin.

    Starts right after ``last_reserved`` when it lies in the set (moving to the next range's
    start when it was a range's end), else at the first range's start; wraps across ranges and
    comes back around to just before the starting point. Each range's gateway is skipped.
    """
    ranges = range_set.ranges
    first_index, first_value = _starting_point(ranges, last_reserved)
    start_range = ranges[first_index]
    yield from _walk(start_range, first_value, int(start_range.end))
    for offset in range(1, len(ranges)):
        other = ranges[(first_index + offset) % len(ranges)]
        yield from _walk(other, int(other.start), int(other.end))
    yield from _walk(start_range, int(start_range.start), first_value - 1)


def _starting_point(ranges: tuple[IPRange, ...], last_reserved: IPAddress | None) -> tuple[int, int]:
    if last_reserved is not None:
        for index, ip_range in enumerate(ranges):
            if ip_range.contains(last_reserved):
                if int(last_reserved) < int(ip_range.end):
                    return index, int(last_reserved) + 1
                following = (index + 1) % len(ranges)
                return following, int(ranges[following].start)
    return 0, int(ranges[0].start)


def _walk(ip_range: IPRange, low: int, high: int) -> Iterator[tuple[int, IPRange]]:
    gateway = int(ip_range.gateway)
    for value in range(low, high + 1):
        if value != gateway:
            yield value, ip_range
