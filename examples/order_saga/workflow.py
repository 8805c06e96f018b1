"""An order saga: charge, reserve stock, ship; undo what was done if a later step fails.

Each step that changes the outside world registers its undo action when it
succeeds; if a later step fails for good, the engine runs the undo actions in
reverse order, each as a durable step of its own. The payment API gets a stable
idempotency key per step (`ctx.info.step_key`), so a charge retried after a crash
in the window between the API call and its checkpoint is never made twice.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from examples.fakes import FakeService
from ratline import NonRetryableError, RetryPolicy, WorkflowContext, WorkflowDefinition


class Address(BaseModel):
    name: str = Field(min_length=1)
    street: str = Field(min_length=1)
    city: str = Field(min_length=1)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class OrderLine(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1)


class OrderInput(BaseModel):
    order_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1)
    amount_cents: int = Field(gt=0)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    lines: list[OrderLine] = Field(min_length=1)
    address: Address


class Charge(BaseModel):
    payment_id: str
    amount_cents: int
    idempotency_key: str


class Reservation(BaseModel):
    reservation_id: str
    skus: list[str]


class Shipment(BaseModel):
    tracking_number: str
    carrier: str


class OrderResult(BaseModel):
    order_id: str
    payment_id: str
    reservation_id: str
    tracking_number: str


# ---------------------------------------------------------------- fake external services


class PaymentDeclined(Exception):
    """The card was declined: retrying the same charge will not help."""


class GatewayTimeout(Exception):
    """The reply was lost: the charge may or may not have happened."""


class OutOfStock(Exception):
    """Not enough items left to reserve the order."""


class AddressRejected(Exception):
    """The carrier does not deliver there: no retry can fix the address."""


class CarrierUnavailable(Exception):
    """A transient carrier outage: worth retrying."""


def _stable_id(prefix: str, seed: str) -> str:
    return f"{prefix}_{hashlib.sha256(seed.encode()).hexdigest()[:12]}"


class PaymentGateway(FakeService):
    """Stripe-like: a repeated idempotency key returns the first charge, not a new one.

    Knobs: `fail("charge", order)` declines the card; `fail("charge-reply", order)`
    charges but loses the reply, the window idempotency keys exist for.
    """

    def __init__(self) -> None:
        super().__init__("payments")
        self._charges: dict[str, Charge] = {}
        self._refunds: dict[str, str] = {}

    def charge(self, order_id: str, amount_cents: int, idempotency_key: str) -> Charge:
        known = self._charges.get(idempotency_key)
        if known is not None:
            self.record("charge-deduplicated", order_id, idempotency_key=idempotency_key)
            return known
        if self.should_fail("charge", order_id):
            raise PaymentDeclined(f"card declined for order {order_id}")
        charge = Charge(
            payment_id=_stable_id("pay", idempotency_key),
            amount_cents=amount_cents,
            idempotency_key=idempotency_key,
        )
        self._charges[idempotency_key] = charge
        self.record("charge", order_id, amount_cents=amount_cents, idempotency_key=idempotency_key)
        if self.should_fail("charge-reply", order_id):  # charged, but the caller never hears
            raise GatewayTimeout("no reply from the payment API")
        return charge

    def refund(self, order_id: str, payment_id: str, idempotency_key: str) -> str:
        known = self._refunds.get(idempotency_key)
        if known is not None:
            self.record("refund-deduplicated", order_id, idempotency_key=idempotency_key)
            return known
        refund_id = _stable_id("re", idempotency_key)
        self._refunds[idempotency_key] = refund_id
        self.record("refund", order_id, payment_id=payment_id, idempotency_key=idempotency_key)
        return refund_id


class Warehouse(FakeService):
    """Holds `STOCK_PER_SKU` of every item; a larger reservation is out of stock."""

    STOCK_PER_SKU = 50

    def __init__(self) -> None:
        super().__init__("inventory")

    def reserve(self, order_id: str, lines: list[OrderLine]) -> Reservation:
        short = [line.sku for line in lines if line.quantity > self.STOCK_PER_SKU]
        if short or self.should_fail("reserve", order_id):
            raise OutOfStock(f"not enough stock for {', '.join(short) or 'the order'}")
        skus = [line.sku for line in lines]
        self.record("reserve", order_id, skus=skus)
        return Reservation(reservation_id=_stable_id("res", order_id), skus=skus)

    def release(self, order_id: str, reservation_id: str) -> None:
        self.record("release", order_id, reservation_id=reservation_id)


class Carrier(FakeService):
    """Ships to `COUNTRIES`; `fail("ship", order_id, n)` simulates an outage."""

    COUNTRIES = frozenset({"AT", "BE", "DE", "DK", "ES", "FR", "GB", "IT", "NL", "SE", "US"})

    def __init__(self) -> None:
        super().__init__("shipping")

    def ship(self, order_id: str, address: Address) -> Shipment:
        if address.country not in self.COUNTRIES:
            raise AddressRejected(f"no delivery to {address.country}")
        if self.should_fail("ship", order_id):
            raise CarrierUnavailable("carrier API timed out")
        self.record("ship", order_id, country=address.country)
        return Shipment(tracking_number=_stable_id("trk", order_id).upper(), carrier="ParcelCo")


payments = PaymentGateway()
warehouse = Warehouse()
carrier = Carrier()

# ---------------------------------------------------------------- steps


def charge_payment(ctx: WorkflowContext, inp: OrderInput) -> Charge:
    # the key is the same on every attempt and every replacement worker of this step
    return payments.charge(inp.order_id, inp.amount_cents, idempotency_key=ctx.info.step_key)


def refund_payment(ctx: WorkflowContext, order_id: str, charge: Charge) -> str:
    return payments.refund(order_id, charge.payment_id, idempotency_key=ctx.info.step_key)


def reserve_stock(inp: OrderInput) -> Reservation:
    try:
        return warehouse.reserve(inp.order_id, inp.lines)
    except OutOfStock as exc:
        raise NonRetryableError(str(exc)) from exc


def release_stock(order_id: str, reservation: Reservation) -> None:
    warehouse.release(order_id, reservation.reservation_id)


def create_shipment(inp: OrderInput) -> Shipment:
    return carrier.ship(inp.order_id, inp.address)


PAYMENT_RETRY = RetryPolicy(max_attempts=4, initial_interval="2s", non_retryable=(PaymentDeclined,))
SHIPPING_RETRY = RetryPolicy(
    max_attempts=3,
    initial_interval="30s",
    backoff_coefficient=2.0,
    non_retryable=(AddressRejected,),
)


class OrderSaga(WorkflowDefinition[OrderInput, OrderResult]):
    """Charge, reserve, ship; a final failure refunds and releases, newest first."""

    name = "order-saga"
    max_duration = "1d"

    async def execute(self, ctx: WorkflowContext, inp: OrderInput) -> OrderResult:
        order = inp.order_id
        charge = await ctx.run(
            "charge-payment",
            charge_payment,
            ctx,
            inp,
            retry=PAYMENT_RETRY,
            compensate=lambda done: refund_payment(ctx, order, done),
        )
        reservation = await ctx.run(
            "reserve-stock",
            reserve_stock,
            inp,
            compensate=lambda done: release_stock(order, done),
        )
        shipment = await ctx.run("create-shipment", create_shipment, inp, retry=SHIPPING_RETRY)
        return OrderResult(
            order_id=order,
            payment_id=charge.payment_id,
            reservation_id=reservation.reservation_id,
            tracking_number=shipment.tracking_number,
        )
