-- The clean purchase lines, netted for returns: the fact every purchase feature is built from.

select
    purchase_key,
    order_id,
    user_id,
    item_id,
    ordered_at,
    quantity,
    cast(returned_quantity as integer) as returned_quantity,
    cast(net_quantity as integer) as net_quantity,
    unit_price,
    net_revenue,
    country
from {{ ref('int_order_lines') }}
