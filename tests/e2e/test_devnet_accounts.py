"""A devnet with more accounts than the chain derives itself: every account is funded, and funding is idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedchain.app.devnet import ACCOUNT_BALANCE_WEI, NODE_ACCOUNTS, Devnet, fund_accounts
from fedchain.chain import connect
from fedchain.chain.accounts import devnet_addresses

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("chain", ["anvil", "ganache"])
def test_every_account_of_a_large_devnet_is_funded(tmp_path: Path, chain: str) -> None:
    count = NODE_ACCOUNTS + 15
    with Devnet(tmp_path / chain, chain, num_accounts=count) as net:
        assert net.state is not None
        w3 = connect(net.state.rpc_url)
        addresses = devnet_addresses(count)
        assert net.state.accounts == addresses
        assert all(w3.eth.get_balance(a) == ACCOUNT_BALANCE_WEI for a in addresses[NODE_ACCOUNTS:])
        assert all(w3.eth.get_balance(a) > 0 for a in addresses[:NODE_ACCOUNTS])
        assert w3.eth.get_balance(devnet_addresses(count + 1)[-1]) == 0  # one past the end: not funded
        # Again: nothing to do (a resumed chain keeps what its accounts have).
        assert fund_accounts(chain, net.rpc_port, addresses[NODE_ACCOUNTS:]) == 0
